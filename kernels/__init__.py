"""Triton kernels (installed as fast_s2s.kernels).

Empty until the GPU issue: each kernel will be wrapped in a torch.library.custom_op with a
register_fake (see ../shared/DESIGN.md, "Backends"), so it runs under TRITON_INTERPRET=1 on the
CPU in the tests and passes opcheck and torch.compile(fullgraph=True).
"""
