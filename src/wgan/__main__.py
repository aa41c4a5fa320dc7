"""``python -m wgan`` (also what ``torchrun -m wgan`` runs)."""

from wgan.cli import main

if __name__ == "__main__":
    main()
