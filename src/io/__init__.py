"""Files in and out, for every command: images (EXIF, 16-bit, gray), videos, DICOM slices, the
downloads of data sets and weight files (by checksum), weight files read without running code,
and predict's writers. Every file is written through :mod:`src.utils.files`' atomic writer.

It imports only :mod:`src.utils` and :mod:`src.ops`; data, models, metrics and the commands
import it, never the reverse (tests/test_import_graph.py).
"""
