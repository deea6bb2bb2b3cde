"""The results store: schema-versioned JSON records under results/raw/<machine-id>/, written atomically.

asv's lesson: every record carries an `api_version`; a record of another version (or of a kind this normbench
does not know) is refused with a message, never misread. One file per machine and kind:

    results/raw/<machine-id>/conformance.json               kind "conformance": outcomes by test id
    results/raw/<machine-id>/benchmark-<device>.json        kind "benchmark": timed cases by case id
    results/raw/<machine-id>/claims.json                    kind "claims": the claims lab's verdicts
    results/raw/<machine-id>/pytest-benchmark/<device>.json pytest-benchmark's own JSON (`pytest-benchmark compare`)

Every entry carries the UTC time it was measured, so merging is per entry, the newer wins, and merging the same
records again changes nothing (`normbench merge` is idempotent, and the order of its inputs does not matter).
Conformance outcomes merge by unit instead. A run's record (one with a `run` section, which only a run writes and
no stored file keeps) replaces exactly the (implementation, variant) units it judged and keeps every other unit as
stored: a `--variant compile` run leaves the eager outcomes alone, without reading the store first, and an
interrupted run keeps, marked `stale`, the stored outcome of each item it never reached. A stored record (a
snapshot, as `normbench merge` reads) merges per implementation: the newer snapshot of an implementation replaces all
of its outcomes. Either way, a pass that the latest run did not confirm never survives.

Results are never lost: every read-merge-write holds a lock on the results folder (`<results>/.normbench.lock`,
via filelock), so concurrent runs keep each other's records; files are written to hidden temporaries
(`.<name>.tmp-XXXX`, matching no record glob) and renamed, and a temporary left by a killed writer is removed by
the next writer. `validate_results_dir` finds a folder that cannot be written, or a record that cannot be read,
before a run judges anything, and `write_fallback` keeps a record that could not be stored.

The modules, each importing only those before it (and, of normbench, only the leaf modules `version`, `verdicts`
and `deploy`, whose deployment names a record carries):

    errors.py    ResultsError, ForgedRecord
    machine.py   the machine fingerprint and id, normbench's commit
    records.py   the header and the record builders, file names and paths, the JSON text, an outcome's merge unit
    seal.py      the HMAC seals of the records a run writes
    files.py     atomic writes through hidden temporaries, the folder's lock, the fallback file
    validate.py  reading and validating one record (api_version, kind, keys, the seal), canonical deployment names
    merge.py     merging two records of one machine and kind (pure)
    write.py     storing records into a folder: merged, under the lock, sealed, written atomically
    scan.py      the record files of a folder, every readable record with a refusal for each other file

The store writes records and knows nothing of how they are shown (tests/test_layering.py): the leaderboard model is
normbench.board, its renderers normbench.publish.
"""
