"""``python -m train.write_ffcv --src DIR --out FILE.beton --max-res N``: an ImageFolder split as an FFCV file.

The command's entry point; the writer is ``train.data.write_ffcv`` (``write_beton``, ``sidecar``, ``main``).
"""
import sys

from train.data.write_ffcv import main

if __name__ == "__main__":
    sys.exit(main())
