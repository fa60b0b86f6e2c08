"""The ``roost`` command line: thin parsing, prompting and output over the engine."""
