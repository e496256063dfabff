"""A server that exits at once, for the end-to-end check that one broken tier never keeps
the others from serving."""
import sys

sys.stderr.write("broken: this server cannot start\n")
sys.exit(2)
