"""The torch ops: registration, fake implementations, autograd, routing. One module per op."""
