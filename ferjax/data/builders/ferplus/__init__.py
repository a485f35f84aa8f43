"""FERPlus builder (`ferplus`, configs {label_csv,fer2013new}_{majority,argmax,distribution})."""

from ferjax.data.builders.ferplus.ferplus import (Ferplus, FerplusConfig, label_from_votes,
                                                  majority_label, soft_label)
