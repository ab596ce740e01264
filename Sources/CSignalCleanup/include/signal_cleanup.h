#ifndef LORAFUSE_SIGNAL_CLEANUP_H
#define LORAFUSE_SIGNAL_CLEANUP_H

// Files to delete if the process is stopped by SIGINT, SIGTERM, SIGHUP or SIGQUIT: the
// temporary files of writes in progress. The handler only calls unlink, signal and raise
// (async-signal-safe), then dies of the same signal, so the exit status says which.

// Installs the handlers once (later calls only unblock the signals on the calling thread).
void lf_cleanup_install(void);

// Registers `path` (copied); returns a slot for lf_cleanup_remove, or -1 when every slot is
// taken or the path is too long (the write then simply goes unguarded).
int lf_cleanup_add(const char *path);

// Forgets the slot (the file was renamed into place or removed).
void lf_cleanup_remove(int slot);

#endif
