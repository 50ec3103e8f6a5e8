"""Store: the study directory as the record of a study, local or in object storage.

Its guards (one owner at a time, a definition that cannot drift), the object-store
mirror, atomic writes and the seals on Ray's sweep state, the tidy table ``trials.csv``,
and the one loader (``store.loader.load``) that every read command goes through. It may
import ``define``; nothing here starts Ray, trains or talks to MLflow.
"""
