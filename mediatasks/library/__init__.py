"""library: safe moves into the library, and an undo log that can reverse them.

Every change to a file the user can see is an operation in the history (``History.operations``):

    mkdir    dst   a directory we created (undo removes it if it is empty)
    trash    src -> dst   a file ``place(on_exists="replace")`` moved aside before publishing over it
    publish  dst   a file we published (src: the file it was built as)
    backup   src -> dst   the source moved into the backup directory (``source.after: backup``)
    delete   src   the source deleted (``source.after: delete``): undo can only report it lost

Crash ordering: write-ahead. An operation is recorded before its change is made, with everything
undo needs to check it (size, mtime_ns, sha256 of the file as it will be); a change that fails is
withdrawn (marked undone). A crash in between leaves an operation that never happened, which undo
recognises from the files and skips: a published file that is not there, a moved file still at its
original path, a deleted file still present. The other order would let a crash leave a file moved
or deleted with no record of where it went: that is the lossy one. Undo does each step, then marks
it undone, so an undo cut short can simply be run again.

Nothing is ever overwritten: every final step is a hard link (which fails if the name is taken)
then an unlink, or, where hard links are not supported, a rename after a check; a file moved
across filesystems is copied, fsynced and checked before its original is unlinked. A replaced file
is moved aside before the new one is linked in, so one of them is always under a recorded name.

The package: ``oplog`` (the log, and the ``OperationLog`` it is written to), ``placement``
(``place``), ``source`` (``handle_source``) and ``undo``.
"""

from mediatasks.library.oplog import Operation, OperationLog
from mediatasks.library.placement import TRASH_DIR_NAME, OnExists, Placed, place, trash_dir_for
from mediatasks.library.source import After, handle_source
from mediatasks.library.undo import UndoReport, undo

__all__ = ["TRASH_DIR_NAME", "After", "OnExists", "Operation", "OperationLog", "Placed", "UndoReport",
           "handle_source", "place", "trash_dir_for", "undo"]
