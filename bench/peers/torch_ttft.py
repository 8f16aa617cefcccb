#!/usr/bin/env python3
"""PyTorch + transformers peer: time to first token, vision time, decode tokens/s and peak RSS
for one image prompt, loaded the model card's way (AutoProcessor + the image-text-to-text auto
class, processor.apply_chat_template with add_generation_prompt=True, greedy generate).

Run inside the oracle chroot (PyTorch 2.14 + transformers 5.12 with OpenBLAS), one process per
setup so that peak RSS belongs to that setup alone:

  ../shared/oracle/run-in-oracle.sh python3 bench/peers/torch_ttft.py \
      --model /work/bench-models/smolvlm-500m-shaped --image bench/images/square.jpg \
      --dtype bf16 --attn eager --runs 3 --new-tokens 32

What is measured, per run (the model is loaded once, before the runs):
  ttft_ms      request start (image file still on disk) to the first generated token: image
               decoding, chat template, processor (resize, tiling, normalisation, tokenisation),
               vision encoder + connector, text prefill and the first token's sampling.
  preprocess_ms  image open + chat template + processor call (inside ttft).
  vision_ms    wall time of model.model.vision_model's forward (all tiles, one batch, as
               transformers runs it), from forward hooks; connector_ms likewise.
  prefill_ms   first text-model forward (the whole prompt), from forward hooks.
  decode_tokens_per_s  (N-1) / (time of last token - time of first token), N = --new-tokens,
               with min_new_tokens = max_new_tokens so EOS cannot stop it early.
  peak_rss_mb  resource.getrusage(RUSAGE_SELF).ru_maxrss after the run (the process's peak so
               far: load + every run up to this one).
Prints one JSON line per run and a final JSON summary (medians) on stdout.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--prompt", default="Can you describe this image?")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--attn", choices=["eager", "sdpa"], default="eager")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--json", default=None, help="also write the summary here")
    args = ap.parse_args()

    t_start = time.perf_counter()
    import torch
    torch.set_num_threads(args.threads)
    from PIL import Image
    from transformers import AutoProcessor, AutoModelForImageTextToText
    from transformers.generation.streamers import BaseStreamer
    t_import = time.perf_counter()

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    processor = AutoProcessor.from_pretrained(args.model)
    # The model card (written for transformers 4.x) uses AutoModelForVision2Seq, which
    # transformers 5 renamed to AutoModelForImageTextToText; same class (Idefics3ForConditionalGeneration).
    model = AutoModelForImageTextToText.from_pretrained(
        args.model, dtype=dtype, attn_implementation=args.attn
    )
    model.eval()
    t_loaded = time.perf_counter()
    info = {
        "setup": f"{args.dtype}-{args.attn}",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "threads": torch.get_num_threads(),
        "model_class": type(model).__name__,
        "import_ms": round((t_import - t_start) * 1000, 1),
        "load_ms": round((t_loaded - t_import) * 1000, 1),
        "rss_after_load_mb": round(rss_mb(), 1),
    }
    print(json.dumps({"info": info}), flush=True)

    inner = model.model
    marks = {}

    def pre(name):
        def f(mod, a, kw=None):
            marks.setdefault(name + "_t0", time.perf_counter())
        return f

    def post(name):
        def f(mod, a, out):
            marks.setdefault(name + "_t1", time.perf_counter())
        return f

    for name, mod in (("vision", inner.vision_model), ("connector", inner.connector), ("text", inner.text_model)):
        mod.register_forward_pre_hook(pre(name))
        mod.register_forward_hook(post(name))

    class Clock(BaseStreamer):
        """generate() calls put() once with the prompt, then once per new token."""

        def __init__(self):
            self.times = []
            self.calls = 0

        def put(self, value):
            self.calls += 1
            if self.calls > 1:
                self.times.append(time.perf_counter())

        def end(self):
            pass

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": args.prompt}]}]
    runs = []
    for r in range(args.runs):
        marks.clear()
        load1 = os.getloadavg()[0]
        clock = Clock()
        t0 = time.perf_counter()
        image = Image.open(args.image)
        image.load()
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = processor(text=prompt, images=[image], return_tensors="pt")
        t_pre = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                do_sample=False,
                streamer=clock,
            )
        t_end = time.perf_counter()
        n = out.shape[1] - inputs["input_ids"].shape[1]
        first, last = clock.times[0], clock.times[-1]
        res = {
            "run": r + 1,
            "loadavg_1m": round(load1, 2),
            "tiles": int(inputs["pixel_values"].shape[1]),
            "prompt_tokens": int(inputs["input_ids"].shape[1]),
            "image_tokens": int((inputs["input_ids"] == model.config.image_token_id).sum()),
            "new_tokens": int(n),
            "preprocess_ms": round((t_pre - t0) * 1000, 1),
            "vision_ms": round((marks["vision_t1"] - marks["vision_t0"]) * 1000, 1),
            "connector_ms": round((marks["connector_t1"] - marks["connector_t0"]) * 1000, 1),
            "prefill_ms": round((marks["text_t1"] - marks["text_t0"]) * 1000, 1),
            "ttft_ms": round((first - t0) * 1000, 1),
            "decode_tokens_per_s": round((len(clock.times) - 1) / (last - first), 2),
            "total_ms": round((t_end - t0) * 1000, 1),
            "peak_rss_mb": round(rss_mb(), 1),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        }
        runs.append(res)
        print(json.dumps(res), flush=True)

    keys = ["preprocess_ms", "vision_ms", "connector_ms", "prefill_ms", "ttft_ms", "decode_tokens_per_s", "total_ms"]
    summary = dict(info)
    summary["runs"] = runs
    summary["median"] = {k: round(statistics.median(x[k] for x in runs), 2) for k in keys}
    summary["peak_rss_mb"] = round(rss_mb(), 1)
    print(json.dumps({"summary": summary}), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
