"""`python -m argml.predict`: batch prediction over images and folders (the work is argml.serving.predict)."""

import sys

from argml.serving.predict import main

if __name__ == "__main__":
    sys.exit(main())
