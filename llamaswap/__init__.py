"""llamaswap: a config compiler and thin runtime for swapping local LLM servers."""

__version__ = "0.1.0"
