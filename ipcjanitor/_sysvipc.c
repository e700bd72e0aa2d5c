/*
 * The System V IPC calls ipcjanitor makes: listing every object (*_STAT_ANY), IPC_STAT by
 * id (with every semaphore's GETPID/GETNCNT/GETZCNT and the set's values, GETALL) and IPC_RMID.
 *
 * Why C and not ctypes: struct shmid_ds/semid_ds/msqid_ds differ between
 * architectures, and the compiler gets them right from the system headers; one call per
 * object also keeps the per-object cost near the kernel's own (see bench/).
 * Every failure raises OSError with the kernel's errno; the Python side decides
 * what an errno means.
 */
#define _GNU_SOURCE /* SHM_STAT_ANY, SEM_STAT_ANY, MSG_STAT_ANY, struct shm_info */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/syscall.h>

union semun_arg {
    int val;
    struct semid_ds *buf;
    unsigned short *array;
};

/* key_t is signed; keys are reported as the unsigned 32-bit value ipcs prints. */
#define KEY(k) ((unsigned long)(unsigned int)(k))

static PyObject *shm_tuple(const struct shmid_ds *ds) {
    return Py_BuildValue("(kIIIIInLLLiik)", KEY(ds->shm_perm.__key), ds->shm_perm.uid,
                         ds->shm_perm.gid, ds->shm_perm.cuid, ds->shm_perm.cgid,
                         (unsigned int)ds->shm_perm.mode, (Py_ssize_t)ds->shm_segsz,
                         (long long)ds->shm_atime, (long long)ds->shm_dtime,
                         (long long)ds->shm_ctime, (int)ds->shm_cpid, (int)ds->shm_lpid,
                         (unsigned long)ds->shm_nattch);
}

/*
 * Each semaphore's GETPID, GETNCNT, GETZCNT and value (one GETALL for the set) as four tuples;
 * -1 with errno set when a call fails (the kernel's errno is kept for the caller).
 */
static int sem_details(int id, Py_ssize_t n, PyObject **out) {
    unsigned short stack_vals[64];
    unsigned short *vals = n <= 64 ? stack_vals : PyMem_Malloc(sizeof(unsigned short) * n);
    int rc = -1;
    for (int k = 0; k < 4; k++) out[k] = NULL;
    if (!vals) {
        PyErr_NoMemory();
        return -1;
    }
    union semun_arg su;
    su.array = vals;
    if (n > 0 && semctl(id, 0, GETALL, su) < 0) goto done;
    for (int k = 0; k < 4; k++)
        if (!(out[k] = PyTuple_New(n))) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        int p = semctl(id, (int)i, GETPID);
        int nc = p < 0 ? -1 : semctl(id, (int)i, GETNCNT);
        int zc = nc < 0 ? -1 : semctl(id, (int)i, GETZCNT);
        if (zc < 0) goto done;
        PyTuple_SET_ITEM(out[0], i, PyLong_FromLong(p));
        PyTuple_SET_ITEM(out[1], i, PyLong_FromLong(nc));
        PyTuple_SET_ITEM(out[2], i, PyLong_FromLong(zc));
        PyTuple_SET_ITEM(out[3], i, PyLong_FromLong(vals[i]));
    }
    rc = 0;
done:
    if (rc < 0) {
        int saved = errno;
        for (int k = 0; k < 4; k++) Py_CLEAR(out[k]);
        errno = saved;
    }
    if (vals != stack_vals) PyMem_Free(vals);
    return rc;
}

/* With strict=0 and no permission to read them, the four per-semaphore fields are None. */
static PyObject *sem_tuple(int id, const struct semid_ds *ds, int strict) {
    Py_ssize_t n = (Py_ssize_t)ds->sem_nsems;
    PyObject *d[4];
    if (sem_details(id, n, d) < 0) {
        if (PyErr_Occurred()) return NULL;
        if (strict || (errno != EACCES && errno != EPERM)) return PyErr_SetFromErrno(PyExc_OSError);
        for (int k = 0; k < 4; k++) d[k] = Py_NewRef(Py_None);
    }
    return Py_BuildValue("(kIIIIInLLNNNN)", KEY(ds->sem_perm.__key), ds->sem_perm.uid,
                         ds->sem_perm.gid, ds->sem_perm.cuid, ds->sem_perm.cgid,
                         (unsigned int)ds->sem_perm.mode, n, (long long)ds->sem_otime,
                         (long long)ds->sem_ctime, d[0], d[1], d[2], d[3]);
}

static PyObject *msg_tuple(const struct msqid_ds *ds) {
    return Py_BuildValue("(kIIIIIkkLLLii)", KEY(ds->msg_perm.__key), ds->msg_perm.uid,
                         ds->msg_perm.gid, ds->msg_perm.cuid, ds->msg_perm.cgid,
                         (unsigned int)ds->msg_perm.mode, (unsigned long)ds->__msg_cbytes,
                         (unsigned long)ds->msg_qnum, (long long)ds->msg_stime,
                         (long long)ds->msg_rtime, (long long)ds->msg_ctime, (int)ds->msg_lspid,
                         (int)ds->msg_lrpid);
}

static int id_arg(PyObject *arg) {
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < 0 || v > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "an IPC id is a non-negative int");
        return -1;
    }
    return (int)v;
}

/* Append (id, *tuple) to list; steals row. */
static int append_row(PyObject *list, int id, PyObject *row) {
    if (!row) return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(row);
    PyObject *full = PyTuple_New(n + 1);
    if (!full) {
        Py_DECREF(row);
        return -1;
    }
    PyTuple_SET_ITEM(full, 0, PyLong_FromLong(id));
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(row, i);
        Py_INCREF(item);
        PyTuple_SET_ITEM(full, i + 1, item);
    }
    Py_DECREF(row);
    int rc = PyList_Append(list, full);
    Py_DECREF(full);
    return rc;
}

/*
 * Every object of one kind in the caller's IPC namespace, as (id, *stat tuple), through
 * SHM_STAT_ANY/SEM_STAT_ANY/MSG_STAT_ANY (Linux 4.17): the same facts /proc/sysvipc prints,
 * without formatting and parsing text. OSError(EINVAL) on kernels without *_STAT_ANY.
 */
static PyObject *list_kind(PyObject *self, PyObject *arg) {
    long kind = PyLong_AsLong(arg);
    if (kind == -1 && PyErr_Occurred()) return NULL;
    int maxidx;
    if (kind == 0) {
        struct shm_info info;
        maxidx = shmctl(0, SHM_INFO, (struct shmid_ds *)(void *)&info);
    } else if (kind == 1) {
        struct seminfo info;
        union semun_arg su;
        su.buf = (struct semid_ds *)(void *)&info;
        maxidx = semctl(0, 0, SEM_INFO, su);
    } else if (kind == 2) {
        struct msginfo info;
        maxidx = msgctl(0, MSG_INFO, (struct msqid_ds *)(void *)&info);
    } else {
        PyErr_SetString(PyExc_ValueError, "kind must be 0, 1 or 2");
        return NULL;
    }
    if (maxidx < 0) return PyErr_SetFromErrno(PyExc_OSError);
    PyObject *list = PyList_New(0);
    if (!list) return NULL;
    for (int idx = 0; idx <= maxidx; idx++) {
        int id;
        PyObject *row;
        if (kind == 0) {
            struct shmid_ds ds;
            if ((id = shmctl(idx, SHM_STAT_ANY, &ds)) < 0) goto skip;
            row = shm_tuple(&ds);
        } else if (kind == 1) {
            struct semid_ds ds;
            union semun_arg su;
            su.buf = &ds;
            if ((id = semctl(idx, 0, SEM_STAT_ANY, su)) < 0) goto skip;
            row = sem_tuple(id, &ds, 0);
            if (!row && PyErr_ExceptionMatches(PyExc_OSError)) {
                /* removed between the two calls: skip it, like a vanished /proc row */
                PyErr_Clear();
                continue;
            }
        } else {
            struct msqid_ds ds;
            if ((id = msgctl(idx, MSG_STAT_ANY, &ds)) < 0) goto skip;
            row = msg_tuple(&ds);
        }
        if (append_row(list, id, row) < 0) {
            Py_DECREF(list);
            return NULL;
        }
        continue;
    skip:
        if (errno == EINVAL || errno == EIDRM) continue; /* unused index, or just removed */
        Py_DECREF(list);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return list;
}

/* IPC_STAT by id of kind 0 shm, 1 sem (strict: with every semaphore's details), 2 msg. */
static PyObject *stat_kind(int kind, int id) {
    switch (kind) {
    case 0: {
        struct shmid_ds ds;
        if (shmctl(id, IPC_STAT, &ds) < 0) return PyErr_SetFromErrno(PyExc_OSError);
        return shm_tuple(&ds);
    }
    case 1: {
        struct semid_ds ds;
        union semun_arg su;
        su.buf = &ds;
        if (semctl(id, 0, IPC_STAT, su) < 0) return PyErr_SetFromErrno(PyExc_OSError);
        return sem_tuple(id, &ds, 1);
    }
    default: {
        struct msqid_ds ds;
        if (msgctl(id, IPC_STAT, &ds) < 0) return PyErr_SetFromErrno(PyExc_OSError);
        return msg_tuple(&ds);
    }
    }
}

static int rmid_kind(int kind, int id) {
    switch (kind) {
    case 0: return shmctl(id, IPC_RMID, NULL);
    case 1: return semctl(id, 0, IPC_RMID);
    default: return msgctl(id, IPC_RMID, NULL);
    }
}

/* kind: 0 shm, 1 sem, 2 msg (the order of ipcjanitor.model.IpcKind). */
static PyObject *rmid(PyObject *self, PyObject *args) {
    int kind, id;
    if (!PyArg_ParseTuple(args, "ii", &kind, &id)) return NULL;
    if (kind < 0 || kind > 2) {
        PyErr_SetString(PyExc_ValueError, "kind must be 0, 1 or 2");
        return NULL;
    }
    if (rmid_kind(kind, id) < 0) return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *shm_stat(PyObject *self, PyObject *arg) {
    int id = id_arg(arg);
    return id < 0 ? NULL : stat_kind(0, id);
}

static PyObject *sem_stat(PyObject *self, PyObject *arg) {
    int id = id_arg(arg);
    return id < 0 ? NULL : stat_kind(1, id);
}

static PyObject *msg_stat(PyObject *self, PyObject *arg) {
    int id = id_arg(arg);
    return id < 0 ? NULL : stat_kind(2, id);
}

/*
 * The remover's per-object mechanics as one batch: for each (id, raw) of one kind, re-read
 * the object by id and IPC_RMID it only if the kernel's record still equals raw. One outcome
 * per item, in order: None (removed), ("stat", errno), ("changed", new raw) (not removed),
 * ("rmid", errno). The Python side decides what each outcome means.
 */
static PyObject *recheck_rmid(PyObject *self, PyObject *args) {
    int kind;
    PyObject *items;
    if (!PyArg_ParseTuple(args, "iO!", &kind, &PyList_Type, &items)) return NULL;
    if (kind < 0 || kind > 2) {
        PyErr_SetString(PyExc_ValueError, "kind must be 0, 1 or 2");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(items);
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i), *outcome = NULL;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            PyErr_SetString(PyExc_TypeError, "items are (id, raw) tuples");
            goto fail;
        }
        int id = id_arg(PyTuple_GET_ITEM(item, 0));
        if (id < 0) goto fail;
        PyObject *now = stat_kind(kind, id);
        if (!now) {
            if (!PyErr_ExceptionMatches(PyExc_OSError)) goto fail;
            PyErr_Clear();
            outcome = Py_BuildValue("(si)", "stat", errno);
        } else {
            int same = PyObject_RichCompareBool(now, PyTuple_GET_ITEM(item, 1), Py_EQ);
            if (same < 0) {
                Py_DECREF(now);
                goto fail;
            }
            if (!same) {
                outcome = Py_BuildValue("(sN)", "changed", now);
            } else {
                Py_DECREF(now);
                outcome = rmid_kind(kind, id) < 0 ? Py_BuildValue("(si)", "rmid", errno)
                                                  : Py_NewRef(Py_None);
            }
        }
        if (!outcome) goto fail;
        PyList_SET_ITEM(out, i, outcome);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"shm_stat", shm_stat, METH_O, "IPC_STAT of a shared memory segment by id."},
    {"sem_stat", sem_stat, METH_O,
     "IPC_STAT of a semaphore set by id, with each semaphore's GETPID, GETNCNT, GETZCNT, value."},
    {"msg_stat", msg_stat, METH_O, "IPC_STAT of a message queue by id."},
    {"list_kind", list_kind, METH_O,
     "Every object of kind 0 shm, 1 sem, 2 msg as (id, *stat tuple), via *_STAT_ANY."},
    {"rmid", rmid, METH_VARARGS, "IPC_RMID: rmid(kind, id), kind 0 shm, 1 sem, 2 msg."},
    {"recheck_rmid", recheck_rmid, METH_VARARGS,
     "recheck_rmid(kind, [(id, raw), ...]): re-read each, IPC_RMID it if unchanged."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_sysvipc",
                                    "System V IPC stat and removal by id.", -1, methods};

/* The build machine's own numbers of the system calls kernel/tasks.py reads from
 * /proc/PID/task/TID/syscall: its table is checked against them in a unit test. */
static int add_syscall(PyObject *calls, const char *name, long nr) {
    PyObject *value = PyLong_FromLong(nr);
    int failed = value == NULL || PyDict_SetItemString(calls, name, value) < 0;
    Py_XDECREF(value);
    return failed ? -1 : 0;
}

static int add_syscalls(PyObject *m) {
    PyObject *calls = PyDict_New();
    if (calls == NULL)
        return -1;
    int failed = add_syscall(calls, "write", SYS_write) || add_syscall(calls, "writev", SYS_writev)
                 || add_syscall(calls, "splice", SYS_splice) || add_syscall(calls, "tee", SYS_tee)
                 || add_syscall(calls, "vmsplice", SYS_vmsplice)
#ifdef SYS_msgsnd
                 || add_syscall(calls, "msgsnd", SYS_msgsnd) || add_syscall(calls, "msgrcv", SYS_msgrcv)
#endif
#ifdef SYS_semop
                 || add_syscall(calls, "semop", SYS_semop)
#endif
#ifdef SYS_semtimedop
                 || add_syscall(calls, "semtimedop", SYS_semtimedop)
#endif
#ifdef SYS_ipc
                 || add_syscall(calls, "ipc", SYS_ipc)
#endif
        ;
    if (failed || PyModule_AddObject(m, "SYSCALLS", calls) < 0) {
        Py_DECREF(calls);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit__sysvipc(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && add_syscalls(m) < 0)
        Py_CLEAR(m);
    return m;
}
