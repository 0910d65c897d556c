"""Lightning callbacks: image comparisons and run reporting."""
