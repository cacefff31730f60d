"""``python -m runner`` trains (see runner.train)."""

from runner.train import main

if __name__ == "__main__":
    main()
