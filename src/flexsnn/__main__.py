"""``python -m flexsnn`` runs the ``flexsnn`` command; so does ``torchrun -m flexsnn``:

torchrun --nproc_per_node 4 -m flexsnn train --config recipes/cifar10_resnet19_mtt.yaml --out runs/c10
"""

import sys

from flexsnn.cli import main

if __name__ == "__main__":
    sys.exit(main())
