#!/usr/bin/env bash
# The demo: generate data -> pretrain the backbone -> train + test Mask R-CNN (COCO bbox/segm mAP)
# -> train + test UperNet (mIoU), on the CPU; each trained model is then tested again in bf16
# (tools/test.py --bf16, where the CPU has native bf16), exported to ONNX and evaluated in ONNX
# Runtime and in OpenVINO f32 and bf16 (same pipeline and metric; OpenVINO where it is installed,
# its bf16 where its CPU plugin has native bf16); prints where the results are.
#
# Usage (from anywhere; `make demo` installs first, then runs this):
#   bash tools/demo.sh                 # everything (DEMO=all)
#   DEMO=det bash tools/demo.sh        # detection only (DEMO=seg: segmentation only)
#   QUICK=1 bash tools/demo.sh         # a few iterations on tiny data: checks the path (CI)
# Environment:
#   DEMO=all|det|seg   what to run (default all; the pretraining runs in every case)
#   QUICK=0|1          1: tiny data, the *_ci.py configs, a few iterations (default 0)
#   DATA_DIR=data      where the datasets are written (default data)
#   WORK_DIR=work_dirs/demo   checkpoints, logs, metrics, pictures (default work_dirs/demo)
#   THREADS=2          torch CPU threads (default 2; on a busy machine 1 can be faster)
#   PYTHON=...         the interpreter (default: $VIRTUAL_ENV, $CONDA_PREFIX or ./.venv)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DEMO=${DEMO:-all}
QUICK=${QUICK:-0}
THREADS=${THREADS:-2}
case "$DEMO" in all|det|seg) ;; *) echo "demo.sh: DEMO=$DEMO: use all, det or seg" >&2; exit 2;; esac
case "$QUICK" in 0|1) ;; *) echo "demo.sh: QUICK=$QUICK: use 0 or 1" >&2; exit 2;; esac
if [ -z "${PYTHON:-}" ]; then
    if [ -n "${VIRTUAL_ENV:-}" ]; then PYTHON="$VIRTUAL_ENV/bin/python"
    elif [ -n "${CONDA_PREFIX:-}" ]; then PYTHON="$CONDA_PREFIX/bin/python"
    else PYTHON="$ROOT/.venv/bin/python"; fi
fi
abspath() { mkdir -p "$1" && (cd "$1" && pwd); }
DATA_DIR=$(abspath "${DATA_DIR:-data}")
WORK_DIR=$(abspath "${WORK_DIR:-work_dirs/demo}")
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
# Idle OpenMP threads sleep instead of spinning: on a machine shared with other jobs, spinning
# threads made training steps several times slower here.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

DET_CFG=configs/demo/mask-rcnn_convnext-demo_lite-fpn_shapes.py
SEG_CFG=configs/demo/upernet_convnext-demo_lite_shapes.py
if [ "$QUICK" = 1 ]; then
    DET_CFG=${DET_CFG%.py}_ci.py
    SEG_CFG=${SEG_CFG%.py}_ci.py
    DET_SIZE=96 SEG_SIZE=64
    DATA_ARGS=(--det-train 8 --det-val 4 --det-size $DET_SIZE --seg-train 8 --seg-val 4
               --seg-size $SEG_SIZE)
    PRETRAIN_ARGS=(--iters 3 --batch-size 8 --crop 32 --warmup 1 --log-interval 1)
else
    DET_SIZE=160 SEG_SIZE=160  # tools/make_demo_data.py's defaults
    DATA_ARGS=()
    PRETRAIN_ARGS=()
fi
PRETRAINED="$WORK_DIR/pretrain/convnext-demo_shapes-cls.pth"
COCO="$DATA_DIR/demo_coco"
ADE="$DATA_DIR/demo_ade"
START=$(date +%s)
SUMMARY="$WORK_DIR/summary.txt"
: > "$SUMMARY"

stage() {  # stage NAME: a time-stamped banner; records the stage's start
    STAGE_NAME=$1
    STAGE_START=$(date +%s)
    echo
    echo "[demo] $(date -u '+%Y-%m-%d %H:%M:%S UTC') == $1"
}
done_stage() {  # done_stage [DETAIL]: the stage's wall-clock time, also into the summary
    local now; now=$(date +%s)
    local line
    line=$(printf '%-29s %5d s  (total %5d s)  %s' "$STAGE_NAME" $((now - STAGE_START)) \
        $((now - START)) "${1:-}")
    echo "[demo] $line"
    echo "$line" >> "$SUMMARY"
}
last_checkpoint() {  # the checkpoint named in WORK/last_checkpoint
    local file="$1/last_checkpoint"
    if [ ! -f "$file" ]; then echo "demo.sh: no checkpoint in $1 (training failed?)" >&2; exit 1; fi
    cat "$file"
}
train_and_test() {  # train_and_test NAME CONFIG WORK_DIR CFG_OPTION...: train, then test the
    # last checkpoint drawing its predictions into WORK_DIR/vis; the test stage stays open
    local name=$1 config=$2 work=$3
    shift 3
    stage "train $name"
    "$PYTHON" tools/train.py "$config" --work-dir "$work" --cfg-options "$@"
    done_stage "$work"
    stage "test $name"
    "$PYTHON" tools/test.py "$config" "$(last_checkpoint "$work")" --work-dir "$work" \
        --show-dir "$work/vis" --cfg-options "$@"
}
export_and_test_onnx() {  # export_and_test_onnx NAME CONFIG WORK_DIR SIZE CFG_OPTION...: export
    # the last checkpoint to WORK_DIR/model.onnx, evaluate it in ONNX Runtime into
    # WORK_DIR/onnxruntime; the test stage stays open
    local name=$1 config=$2 work=$3 size=$4
    shift 4
    stage "export $name ONNX"
    "$PYTHON" tools/export_onnx.py "$config" "$(last_checkpoint "$work")" --out "$work/model.onnx" \
        --shape "$size" "$size" --cfg-options "$@"
    done_stage "$work/model.onnx"
    stage "test $name ONNX"
    "$PYTHON" tools/test_onnx.py "$config" "$work/model.onnx" --threads "$THREADS" \
        --work-dir "$work/onnxruntime" --cfg-options "$@"
}
test_openvino() {  # test_openvino NAME CONFIG WORK_DIR PRECISION CFG_OPTION...: evaluate
    # WORK_DIR/model.onnx in OpenVINO at PRECISION (f32, bf16) into WORK_DIR/openvino[-bf16]; the
    # test stage stays open
    local name=$1 config=$2 work=$3 precision=$4
    shift 4
    local out="$work/openvino"
    if [ "$precision" != f32 ]; then out="$out-$precision"; fi
    stage "test $name OpenVINO $precision"
    "$PYTHON" tools/test_onnx.py "$config" "$work/model.onnx" --runtime openvino \
        --precision "$precision" --threads "$THREADS" --work-dir "$out" --cfg-options "$@"
}
test_bf16() {  # test_bf16 NAME CONFIG WORK_DIR CFG_OPTION...: test the last checkpoint under
    # bf16 autocast into WORK_DIR/bf16 (where bf16 is native); the test stage stays open
    local name=$1 config=$2 work=$3
    shift 3
    stage "test $name bf16"
    "$PYTHON" tools/test.py "$config" "$(last_checkpoint "$work")" --bf16 --work-dir "$work/bf16" \
        --cfg-options "$@"
}
metric() {  # metric JSON KEY [SCALE]: a value of test_metrics.json, times SCALE, 3 decimals
    "$PYTHON" -c 'import json, sys; m = json.load(open(sys.argv[1]))
print(f"{float(m[sys.argv[2]]) * float(sys.argv[3]):.3f}")' "$1" "$2" "${3:-1}"
}

# bf16 is tested where it is native (convnext_backbone.machine.native_bf16); elsewhere
# tools/test.py --bf16 refuses
if "$PYTHON" -c 'import sys; from convnext_backbone import machine
sys.exit(0 if machine.native_bf16() else 1)'; then BF16=1; else BF16=0; fi
# the ONNX stages need the torch of convnext_backbone.deploy.onnx_ops.EXPORT_TORCH; on an older
# torch they are skipped with a line saying so
if "$PYTHON" -c 'import sys; from convnext_backbone import compat
from convnext_backbone.deploy.onnx_ops import EXPORT_TORCH
sys.exit(0 if compat.torch_at_least(EXPORT_TORCH) else 1)' 2>/dev/null; then ONNX=1; else ONNX=0; fi
# the exported files are also evaluated in OpenVINO where it is installed (the deploy extra), in
# bf16 too where its CPU plugin lists BF16 (convnext_backbone.deploy.session.check_runtime)
openvino_runs() {  # openvino_runs PRECISION: exit status 0 if OpenVINO runs PRECISION here
    "$PYTHON" -c 'import sys; from convnext_backbone.deploy.session import check_runtime
check_runtime("openvino", sys.argv[1])' "$1" 2>/dev/null
}
OV_PRECISIONS=()
if [ "$ONNX" = 1 ] && openvino_runs f32; then
    OV_PRECISIONS=(f32)
    if openvino_runs bf16; then OV_PRECISIONS+=(bf16); fi
fi

echo "[demo] DEMO=$DEMO QUICK=$QUICK threads=$THREADS data=$DATA_DIR work=$WORK_DIR"
echo "[demo] wall-clock times depend on the machine and on what else runs on it"

stage "data"
"$PYTHON" tools/make_demo_data.py --out "$DATA_DIR" ${DATA_ARGS[@]+"${DATA_ARGS[@]}"}
done_stage "$COCO, $ADE"

stage "pretrain backbone"
"$PYTHON" tools/pretrain_demo.py --config "$DET_CFG" --coco "$COCO" --ade "$ADE" \
    --out "$PRETRAINED" --threads "$THREADS" ${PRETRAIN_ARGS[@]+"${PRETRAIN_ARGS[@]}"}
done_stage "$PRETRAINED"

RESULTS=()
if [ "$DEMO" != seg ]; then
    DET_WORK="$WORK_DIR/det"
    DET_DATA=(model.backbone.init_cfg.checkpoint="$PRETRAINED"
              train_dataloader.dataset.data_root="$COCO/"
              val_dataloader.dataset.data_root="$COCO/"
              test_dataloader.dataset.data_root="$COCO/"
              val_evaluator.ann_file="$COCO/annotations/instances_val.json"
              test_evaluator.ann_file="$COCO/annotations/instances_val.json")
    train_and_test "Mask R-CNN" "$DET_CFG" "$DET_WORK" "${DET_DATA[@]}"
    BBOX=$(metric "$DET_WORK/test_metrics.json" coco/bbox_mAP)
    SEGM=$(metric "$DET_WORK/test_metrics.json" coco/segm_mAP)
    done_stage "bbox mAP $BBOX, segm mAP $SEGM"
    RESULTS+=("Mask R-CNN: bbox mAP $BBOX, segm mAP $SEGM (target bbox mAP >= 0.5)")
    if [ "$BF16" = 1 ]; then
        test_bf16 "Mask R-CNN" "$DET_CFG" "$DET_WORK" "${DET_DATA[@]}"
        BF16_BBOX=$(metric "$DET_WORK/bf16/test_metrics.json" coco/bbox_mAP)
        BF16_SEGM=$(metric "$DET_WORK/bf16/test_metrics.json" coco/segm_mAP)
        done_stage "bbox mAP $BF16_BBOX, segm mAP $BF16_SEGM"
        RESULTS+=("Mask R-CNN bf16: bbox mAP $BF16_BBOX, segm mAP $BF16_SEGM ($DET_WORK/bf16)")
    fi
    if [ "$ONNX" = 1 ]; then
        export_and_test_onnx "Mask R-CNN" "$DET_CFG" "$DET_WORK" "$DET_SIZE" "${DET_DATA[@]}"
        ORT_BBOX=$(metric "$DET_WORK/onnxruntime/test_metrics.json" coco/bbox_mAP)
        ORT_SEGM=$(metric "$DET_WORK/onnxruntime/test_metrics.json" coco/segm_mAP)
        done_stage "bbox mAP $ORT_BBOX, segm mAP $ORT_SEGM"
        RESULTS+=("  ONNX Runtime: bbox mAP $ORT_BBOX, segm mAP $ORT_SEGM ($DET_WORK/model.onnx)")
        for precision in ${OV_PRECISIONS[@]+"${OV_PRECISIONS[@]}"}; do
            test_openvino "Mask R-CNN" "$DET_CFG" "$DET_WORK" "$precision" "${DET_DATA[@]}"
            OV_METRICS="$DET_WORK/openvino$([ "$precision" = f32 ] || echo "-$precision")"
            OV_BBOX=$(metric "$OV_METRICS/test_metrics.json" coco/bbox_mAP)
            OV_SEGM=$(metric "$OV_METRICS/test_metrics.json" coco/segm_mAP)
            done_stage "bbox mAP $OV_BBOX, segm mAP $OV_SEGM"
            RESULTS+=("  OpenVINO $precision: bbox mAP $OV_BBOX, segm mAP $OV_SEGM ($OV_METRICS)")
        done
    else
        RESULTS+=("  ONNX Runtime: skipped (the export needs a newer torch; docs/deploy.md)")
    fi
    if [ "$ONNX" = 1 ] && [ ${#OV_PRECISIONS[@]} = 0 ]; then
        RESULTS+=("  OpenVINO: skipped (not installed: pip install openvino; docs/deploy.md)")
    fi
    RESULTS+=("  metrics  $DET_WORK/test_metrics.json, $DET_WORK/onnxruntime/test_metrics.json"
              "  pictures $DET_WORK/vis/ (boxes and masks on every val image)"
              "  weights  $(last_checkpoint "$DET_WORK")")
fi
if [ "$DEMO" != det ]; then
    SEG_WORK="$WORK_DIR/seg"
    SEG_DATA=(model.backbone.init_cfg.checkpoint="$PRETRAINED"
              train_dataloader.dataset.data_root="$ADE"
              val_dataloader.dataset.data_root="$ADE"
              test_dataloader.dataset.data_root="$ADE")
    train_and_test UperNet "$SEG_CFG" "$SEG_WORK" "${SEG_DATA[@]}"
    # mmseg reports percentages
    MIOU=$(metric "$SEG_WORK/test_metrics.json" mIoU 0.01)
    done_stage "mIoU $MIOU"
    RESULTS+=("UperNet: mIoU $MIOU (target >= 0.6)")
    if [ "$BF16" = 1 ]; then
        test_bf16 UperNet "$SEG_CFG" "$SEG_WORK" "${SEG_DATA[@]}"
        BF16_MIOU=$(metric "$SEG_WORK/bf16/test_metrics.json" mIoU 0.01)
        done_stage "mIoU $BF16_MIOU"
        RESULTS+=("UperNet bf16: mIoU $BF16_MIOU ($SEG_WORK/bf16)")
    fi
    if [ "$ONNX" = 1 ]; then
        export_and_test_onnx UperNet "$SEG_CFG" "$SEG_WORK" "$SEG_SIZE" "${SEG_DATA[@]}"
        ORT_MIOU=$(metric "$SEG_WORK/onnxruntime/test_metrics.json" mIoU 0.01)
        done_stage "mIoU $ORT_MIOU"
        RESULTS+=("  ONNX Runtime: mIoU $ORT_MIOU ($SEG_WORK/model.onnx)")
        for precision in ${OV_PRECISIONS[@]+"${OV_PRECISIONS[@]}"}; do
            test_openvino UperNet "$SEG_CFG" "$SEG_WORK" "$precision" "${SEG_DATA[@]}"
            OV_METRICS="$SEG_WORK/openvino$([ "$precision" = f32 ] || echo "-$precision")"
            OV_MIOU=$(metric "$OV_METRICS/test_metrics.json" mIoU 0.01)
            done_stage "mIoU $OV_MIOU"
            RESULTS+=("  OpenVINO $precision: mIoU $OV_MIOU ($OV_METRICS)")
        done
    else
        RESULTS+=("  ONNX Runtime: skipped (the export needs a newer torch; docs/deploy.md)")
    fi
    if [ "$ONNX" = 1 ] && [ ${#OV_PRECISIONS[@]} = 0 ]; then
        RESULTS+=("  OpenVINO: skipped (not installed: pip install openvino; docs/deploy.md)")
    fi
    RESULTS+=("  metrics  $SEG_WORK/test_metrics.json, $SEG_WORK/onnxruntime/test_metrics.json"
              "  pictures $SEG_WORK/vis/vis_data/vis_image/ (coloured prediction beside ground truth)"
              "  weights  $(last_checkpoint "$SEG_WORK")")
fi

echo
echo "[demo] ================================ results ================================"
for line in ${RESULTS[@]+"${RESULTS[@]}"}; do echo "[demo] $line" | tee -a "$SUMMARY"; done
echo "[demo] total wall-clock $(( $(date +%s) - START )) s; stage times in $SUMMARY"
