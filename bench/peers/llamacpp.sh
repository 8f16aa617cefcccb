#!/usr/bin/env bash
# llama.cpp peer (libmtmd): converts the checkpoint to a BF16 text GGUF + F16 mmproj GGUF with
# llama.cpp's convert_hf_to_gguf.py, then runs llama-mtmd-cli on the image and prompt RUNS times
# with THREADS threads, greedy, NEW_TOKENS tokens with --ignore-eos, and prints one JSON line per
# run (parsed by parse_mtmd.py from the timestamped log) plus the medians.
#
# Run from the repository root on the host (it uses the oracle chroot for llama.cpp and python):
#   bench/peers/llamacpp.sh
# Settings (environment):
#   MODEL_DIR  HF checkpoint           (default /work/bench-models/smolvlm-500m-shaped)
#   GGUF_DIR   where the GGUFs go      (default $MODEL_DIR/../gguf; reused if present)
#   LOG_DIR    logs + results          (default $MODEL_DIR/../peer-logs; must be under the
#                                       project's parent folder so the chroot sees it)
#   IMAGE (bench/images/square.jpg)  PROMPT ("Can you describe this image?")
#   RUNS (3)  NEW_TOKENS (32)  THREADS (2)  CTX (unset: llama.cpp's default, 8192 here)
#   ORACLE     the chroot runner       (default ../shared/oracle/run-in-oracle.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd -P)
MODEL_DIR=${MODEL_DIR:-/work/bench-models/smolvlm-500m-shaped}
GGUF_DIR=${GGUF_DIR:-$(dirname "$MODEL_DIR")/gguf}
LOG_DIR=${LOG_DIR:-$(dirname "$MODEL_DIR")/peer-logs}
IMAGE=${IMAGE:-bench/images/square.jpg}
PROMPT=${PROMPT:-"Can you describe this image?"}
RUNS=${RUNS:-3}
NEW_TOKENS=${NEW_TOKENS:-32}
THREADS=${THREADS:-2}
ORACLE=${ORACLE:-$ROOT/../shared/oracle/run-in-oracle.sh}
[ -x "$ORACLE" ] || ORACLE=/work/shared/oracle/run-in-oracle.sh
CONVERT=/usr/share/doc/llama.cpp-tools/scripts/convert_hf_to_gguf.py   # Debian llama.cpp-tools
NAME=$(basename "$MODEL_DIR")
TEXT_GGUF=$GGUF_DIR/$NAME-BF16.gguf
MMPROJ_GGUF=$GGUF_DIR/mmproj-$NAME-F16.gguf
mkdir -p "$GGUF_DIR" "$LOG_DIR"

# convert_hf_to_gguf.py imports sentencepiece before checking for tokenizer.model, and the chroot
# has no python3-sentencepiece. SmolVLM has no tokenizer.model (it is a GPT-2 style BPE in
# tokenizer.json), so with sentencepiece installed the converter would get FileNotFoundError and
# fall through to the BPE vocab. This shim gives the same FileNotFoundError without installing it.
SHIM=$GGUF_DIR/.spshim
if ! "$ORACLE" python3 -c "import sentencepiece" 2>/dev/null; then
  mkdir -p "$SHIM"
  cat > "$SHIM/sentencepiece.py" <<'EOF'
class SentencePieceProcessor:
    def __init__(self, *a, **k):
        raise FileNotFoundError("sentencepiece is not installed (shim used by bench/peers/llamacpp.sh)")
EOF
  PYPATH=$SHIM
else
  PYPATH=
fi

if [ ! -s "$TEXT_GGUF" ]; then
  echo "converting text model -> $TEXT_GGUF" >&2
  "$ORACLE" env PYTHONPATH="$PYPATH" python3 "$CONVERT" "$MODEL_DIR" --outtype bf16 --outfile "$TEXT_GGUF" > "$LOG_DIR/convert-text.log" 2>&1
fi
if [ ! -s "$MMPROJ_GGUF" ]; then
  echo "converting projector -> $MMPROJ_GGUF" >&2
  "$ORACLE" env PYTHONPATH="$PYPATH" python3 "$CONVERT" "$MODEL_DIR" --mmproj --outtype f16 --outfile "$MMPROJ_GGUF" > "$LOG_DIR/convert-mmproj.log" 2>&1
fi

CTX_ARGS=()
[ -n "${CTX:-}" ] && CTX_ARGS=(-c "$CTX")

if [ -x /usr/bin/time ]; then TIMEV=(/usr/bin/time -v); else TIMEV=(); fi
RESULTS=$LOG_DIR/llamacpp-results.jsonl
: > "$RESULTS"
for i in $(seq 1 "$RUNS"); do
  LOG=$LOG_DIR/llamacpp-run$i.err
  LOAD=$(cut -d' ' -f1 /proc/loadavg)
  if [ ${#TIMEV[@]} -gt 0 ]; then
    "${TIMEV[@]}" "$ORACLE" llama-mtmd-cli -m "$TEXT_GGUF" --mmproj "$MMPROJ_GGUF" --image "$IMAGE" \
      -p "$PROMPT" -t "$THREADS" -n "$NEW_TOKENS" --ignore-eos --temp 0 --perf --log-timestamps -lv 4 \
      "${CTX_ARGS[@]}" > "$LOG_DIR/llamacpp-run$i.out" 2> "$LOG"
  else
    # no GNU time on the host: measure the peak RSS of the child from inside the chroot
    "$ORACLE" python3 -c 'import resource,subprocess,sys; rc=subprocess.run(sys.argv[1:]).returncode; print("peak_rss_kb=%d" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)' \
      llama-mtmd-cli -m "$TEXT_GGUF" --mmproj "$MMPROJ_GGUF" --image "$IMAGE" \
      -p "$PROMPT" -t "$THREADS" -n "$NEW_TOKENS" --ignore-eos --temp 0 --perf --log-timestamps -lv 4 \
      "${CTX_ARGS[@]}" > "$LOG_DIR/llamacpp-run$i.out" 2> "$LOG"
  fi
  LOAD_AFTER=$(cut -d' ' -f1 /proc/loadavg)
  J=$("$ORACLE" python3 "$ROOT/bench/peers/parse_mtmd.py" "$LOG")
  J=${J%\}}", \"run\": $i, \"loadavg_1m\": $LOAD, \"loadavg_1m_after\": $LOAD_AFTER}"
  echo "$J" | tee -a "$RESULTS"
done

"$ORACLE" python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = ["load_ms", "vision_ms", "vision_ms_per_tile", "image_prefill_ms", "ttft_ms", "decode_tokens_per_s", "peak_rss_mb"]
med = {k: round(statistics.median(r[k] for r in runs if r.get(k) is not None), 1) for k in keys}
print(json.dumps({"summary": {"runs": len(runs), "tiles": runs[0]["tiles"], "image_tokens": runs[0]["image_tokens"],
                              "prompt_tokens": runs[0].get("prompt_tokens"), "median": med}}))
EOF
