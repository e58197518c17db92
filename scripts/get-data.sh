#!/bin/sh
# Fashion-MNIST comes from Debian's package; install it where apt-get is usable, otherwise say how to get it.
D=/usr/share/datasets/fashion-mnist
if [ -d "$D" ]; then exit 0; fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) && exit 0
fi
echo "note: Fashion-MNIST not found at $D; install Debian's 'dataset-fashion-mnist' or pass --data-dir DIR"
echo "      with the four IDX .gz files. The shipped 1,000-image test subset works without it."
exit 0
