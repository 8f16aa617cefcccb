"""Writes bench/images/square.jpg: the centre square of test/fixtures/images/coffee.png
(600x400 -> 400x400), resized to 1024x1024 (bicubic) and saved as JPEG quality 90.
Run inside the oracle chroot (it has Pillow):
  ../shared/oracle/run-in-oracle.sh python3 bench/peers/make_square.py
"""
import os
from PIL import Image

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
src = os.path.join(root, "test", "fixtures", "images", "coffee.png")
dst = os.path.join(root, "bench", "images", "square.jpg")

im = Image.open(src).convert("RGB")
w, h = im.size
s = min(w, h)
left, top = (w - s) // 2, (h - s) // 2
im = im.crop((left, top, left + s, top + s)).resize((1024, 1024), Image.BICUBIC)
os.makedirs(os.path.dirname(dst), exist_ok=True)
im.save(dst, "JPEG", quality=90)
print(dst, im.size)
