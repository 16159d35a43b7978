"""The super-resolution transformer (paper §3.3, Appendix A.3): a bidirectional, windowed video transformer over
MAGVIT-v2 tokens that upsamples the LM's 224x128 output 2x per stage (windows, model, objective, sampling)."""
