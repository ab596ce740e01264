#include "signal_cleanup.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

enum { SLOTS = 64, PATH_BYTES = 4096 };

// A slot's path is written while the slot is claimed (state 1) and published with state 2;
// the handler reads only published slots.
static _Atomic int states[SLOTS];
static char paths[SLOTS][PATH_BYTES];
static atomic_flag installed = ATOMIC_FLAG_INIT;
static const int handled[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

static void on_signal(int number) {
    for (int slot = 0; slot < SLOTS; slot++) {
        if (atomic_load(&states[slot]) == 2) unlink(paths[slot]);
    }
    signal(number, SIG_DFL);
    raise(number);
}

void lf_cleanup_install(void) {
    // A parent may have spawned us with these signals blocked (swift-corelibs' Process passes
    // on its thread's mask): unblock them on this thread, so a stop request is not held back.
    sigset_t wanted;
    sigemptyset(&wanted);
    for (unsigned index = 0; index < sizeof handled / sizeof handled[0]; index++) sigaddset(&wanted, handled[index]);
    pthread_sigmask(SIG_UNBLOCK, &wanted, NULL);
    if (atomic_flag_test_and_set(&installed)) return;
    for (unsigned index = 0; index < sizeof handled / sizeof handled[0]; index++) {
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_handler = on_signal;
        sigemptyset(&action.sa_mask);
        for (unsigned other = 0; other < sizeof handled / sizeof handled[0]; other++) sigaddset(&action.sa_mask, handled[other]);
        // A signal someone chose to ignore (nohup) stays ignored.
        struct sigaction previous;
        if (sigaction(handled[index], NULL, &previous) == 0 && previous.sa_handler == SIG_IGN) continue;
        sigaction(handled[index], &action, NULL);
    }
}

int lf_cleanup_add(const char *path) {
    size_t length = strlen(path);
    if (length >= PATH_BYTES) return -1;
    for (int slot = 0; slot < SLOTS; slot++) {
        int expected = 0;
        if (atomic_compare_exchange_strong(&states[slot], &expected, 1)) {
            memcpy(paths[slot], path, length + 1);
            atomic_store(&states[slot], 2);
            return slot;
        }
    }
    return -1;
}

void lf_cleanup_remove(int slot) {
    if (slot >= 0 && slot < SLOTS) atomic_store(&states[slot], 0);
}
