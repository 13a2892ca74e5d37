"""File formats. The only package that reads or writes files."""

from .fhir import read_fhir_bundle as read_fhir_bundle
from .hdf5 import load_twin as load_twin, save_twin as save_twin
from .pulseq import read_seq as read_seq, write_seq as write_seq
