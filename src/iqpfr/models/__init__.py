"""Pure ``nn.Module`` networks: CodeFormer, GFPGAN v1.4, IQPFR and their building blocks.

Build them with ``iqpfr.create_model(name, **overrides)`` or instantiate the classes directly.
"""
