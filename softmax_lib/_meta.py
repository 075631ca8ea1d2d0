"""The book's identity, in one place (tests keep notebooks and _config.yml in step)."""

__version__ = "0.1.0"

#: Where the book's repository lives; the notebooks' Colab setup cell installs from it.
REPOSITORY_URL = "https://github.com/softmax-book/softmax-book"
