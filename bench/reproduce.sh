#!/usr/bin/env bash
# Reproduce the published tables from official weights and the bicubic baseline:
#   bash bench/reproduce.sh [DATA_DIR] [WEIGHTS_DIR]   (defaults: ../shared/data ../shared/weights)
# Each run prints its table; results land under outputs/eval/runs/<timestamp>/.
set -euo pipefail
DATA=${1:-../shared/data}
WEIGHTS=${2:-../shared/weights}
SETS='data.sets=[Set5,Set14,B100]'
PY=${PY:-.venv/bin/python}
run() { echo "== $*"; "$PY" -m src.eval data=benchmark "paths.data_dir=$DATA" "$SETS" comparisons=2 \
  trainer.enable_progress_bar=false "$@" 2>&1 | grep -v -E "Warning|warn|Tip|available|^\s*$"; }
for s in 2 3 4; do run model=bicubic scale=$s model.gray=raw; done
for s in 2 3 4; do run model=imdn scale=$s "model.pretrained=$WEIGHTS/Zheng222_IMDN/IMDN_x$s.pth"; done
for s in 2 3 4; do run model=pan scale=$s "model.pretrained=$WEIGHTS/zhaohengyuan1_PAN/PANx${s}_DF2K.pth"; done
for s in 2 4; do run model=carn_m scale=$s "model.pretrained=$WEIGHTS/nmhkahn_CARN-pytorch/carn_m.pth"; done
run model=rfdn scale=4 "model.pretrained=$WEIGHTS/njulj_RFDN/RFDN_AIM.pth"
run model=rlfn scale=2 "model.pretrained=$WEIGHTS/bytedance_RLFN/rlfn_x2.pth"
run model=rlfn_s scale=2 "model.pretrained=$WEIGHTS/bytedance_RLFN/rlfn_s_x2.pth"
for v in SMFANet SMFANet_plus; do
  m=$(echo "$v" | tr '[:upper:]' '[:lower:]')
  for d in DF2K DIV2K; do run model=$m scale=2 "model.pretrained=$WEIGHTS/Zheng-MJ_SMFANet/${v}_${d}_100w_x2SR.pth"; done
done
