/*
 * The System V IPC calls ipcjanitor makes: IPC_STAT by id (with every
 * semaphore's GETPID/GETNCNT/GETZCNT) and IPC_RMID.
 *
 * Why C and not ctypes: struct shmid_ds/semid_ds/msqid_ds differ between
 * architectures, and the compiler gets them right from <sys/*.h>; one call per
 * object also keeps the per-object cost near the kernel's own (see bench/).
 * Every failure raises OSError with the kernel's errno; the Python side decides
 * what an errno means.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>

union semun_arg {
    int val;
    struct semid_ds *buf;
    unsigned short *array;
};

/* key_t is signed; keys are reported as the unsigned 32-bit value ipcs prints. */
#define KEY(k) ((unsigned long)(unsigned int)(k))

static PyObject *shm_stat(PyObject *self, PyObject *arg) {
    int id = (int)PyLong_AsLong(arg);
    if (id == -1 && PyErr_Occurred()) return NULL;
    struct shmid_ds ds;
    if (shmctl(id, IPC_STAT, &ds) < 0) return PyErr_SetFromErrno(PyExc_OSError);
    return Py_BuildValue("(kIIIIInLLLiik)", KEY(ds.shm_perm.__key), ds.shm_perm.uid,
                         ds.shm_perm.gid, ds.shm_perm.cuid, ds.shm_perm.cgid,
                         (unsigned int)ds.shm_perm.mode, (Py_ssize_t)ds.shm_segsz,
                         (long long)ds.shm_atime, (long long)ds.shm_dtime,
                         (long long)ds.shm_ctime, (int)ds.shm_cpid, (int)ds.shm_lpid,
                         (unsigned long)ds.shm_nattch);
}

static PyObject *sem_stat(PyObject *self, PyObject *arg) {
    int id = (int)PyLong_AsLong(arg);
    if (id == -1 && PyErr_Occurred()) return NULL;
    struct semid_ds ds;
    union semun_arg su;
    su.buf = &ds;
    if (semctl(id, 0, IPC_STAT, su) < 0) return PyErr_SetFromErrno(PyExc_OSError);
    Py_ssize_t n = (Py_ssize_t)ds.sem_nsems;
    PyObject *pids = PyTuple_New(n), *ncnt = PyTuple_New(n), *zcnt = PyTuple_New(n);
    if (!pids || !ncnt || !zcnt) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        int p = semctl(id, (int)i, GETPID);
        int nc = p < 0 ? -1 : semctl(id, (int)i, GETNCNT);
        int zc = nc < 0 ? -1 : semctl(id, (int)i, GETZCNT);
        if (zc < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto fail;
        }
        PyTuple_SET_ITEM(pids, i, PyLong_FromLong(p));
        PyTuple_SET_ITEM(ncnt, i, PyLong_FromLong(nc));
        PyTuple_SET_ITEM(zcnt, i, PyLong_FromLong(zc));
    }
    return Py_BuildValue("(kIIIIInLLNNN)", KEY(ds.sem_perm.__key), ds.sem_perm.uid,
                         ds.sem_perm.gid, ds.sem_perm.cuid, ds.sem_perm.cgid,
                         (unsigned int)ds.sem_perm.mode, n, (long long)ds.sem_otime,
                         (long long)ds.sem_ctime, pids, ncnt, zcnt);
fail:
    Py_XDECREF(pids);
    Py_XDECREF(ncnt);
    Py_XDECREF(zcnt);
    return NULL;
}

static PyObject *msg_stat(PyObject *self, PyObject *arg) {
    int id = (int)PyLong_AsLong(arg);
    if (id == -1 && PyErr_Occurred()) return NULL;
    struct msqid_ds ds;
    if (msgctl(id, IPC_STAT, &ds) < 0) return PyErr_SetFromErrno(PyExc_OSError);
    return Py_BuildValue("(kIIIIIkkLLLii)", KEY(ds.msg_perm.__key), ds.msg_perm.uid,
                         ds.msg_perm.gid, ds.msg_perm.cuid, ds.msg_perm.cgid,
                         (unsigned int)ds.msg_perm.mode, (unsigned long)ds.__msg_cbytes,
                         (unsigned long)ds.msg_qnum, (long long)ds.msg_stime,
                         (long long)ds.msg_rtime, (long long)ds.msg_ctime, (int)ds.msg_lspid,
                         (int)ds.msg_lrpid);
}

/* kind: 0 shm, 1 sem, 2 msg (the order of ipcjanitor.model.IpcKind). */
static PyObject *rmid(PyObject *self, PyObject *args) {
    int kind, id, rc;
    if (!PyArg_ParseTuple(args, "ii", &kind, &id)) return NULL;
    switch (kind) {
    case 0: rc = shmctl(id, IPC_RMID, NULL); break;
    case 1: rc = semctl(id, 0, IPC_RMID); break;
    case 2: rc = msgctl(id, IPC_RMID, NULL); break;
    default: PyErr_SetString(PyExc_ValueError, "kind must be 0, 1 or 2"); return NULL;
    }
    if (rc < 0) return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"shm_stat", shm_stat, METH_O, "IPC_STAT of a shared memory segment by id."},
    {"sem_stat", sem_stat, METH_O,
     "IPC_STAT of a semaphore set by id, with each semaphore's GETPID, GETNCNT, GETZCNT."},
    {"msg_stat", msg_stat, METH_O, "IPC_STAT of a message queue by id."},
    {"rmid", rmid, METH_VARARGS, "IPC_RMID: rmid(kind, id), kind 0 shm, 1 sem, 2 msg."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_sysvipc",
                                    "System V IPC stat and removal by id.", -1, methods};

PyMODINIT_FUNC PyInit__sysvipc(void) { return PyModule_Create(&module); }
