/*
 * purposelimit._speedups: the read path's common case, in C.
 *
 * Two base classes, each the C twin of a pure-Python base that stays the
 * reference implementation:
 *
 *   Guard  <->  purposelimit._records._PyGuard  (a personal field's descriptor)
 *   Block  <->  purposelimit._context._PyBlock  (processing's __enter__/__exit__)
 *
 * Guard.__get__ completes in C only the memoised read: a decision memoised on
 * the record, for this field (memo[8] is the guard) and the active block's
 * binding, valid now and for the store's current version. It audits the read
 * exactly as the Python code does (the four items of an entry, ENTRY_ITEMS,
 * appended to the audit buffer all or none), then returns the slot's value or,
 * for a denial in enforce mode, raises the ProcessingDenied the Python
 * `_denial` would (the details it kept for this memo; `_denial` itself when
 * there are none yet). Every other case (no block, no memo, an access on the
 * class, an unexpected type) is handed to the Python reference before any side
 * effect, so both implementations decide, audit and raise alike. Past the
 * clock call, a stale memo goes to the Python `_read`, and a full buffer or
 * monitor mode to `_settle`, as in the Python code.
 *
 * Block.__enter__/__exit__ do what _PyBlock's do: reuse the prepared Active
 * (or ask the Python `_activate`/`_under` for one), set or reset the ContextVar,
 * and hand a non-empty audit buffer to the Python `_close`; anything but an
 * exact Active goes to _PyBlock's own methods.
 *
 * The state below is the main interpreter's: the module refuses to configure
 * itself in a sub-interpreter (single-phase init, static state), where
 * purposelimit then runs the pure-Python read path.
 *
 * The slots of the Python classes involved (Active, _Extra, Epoch, the record
 * class's `field_tags`) are read at the offsets of their member descriptors,
 * found once by configure_*() and checked against the exact types.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define SLOT(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))

/* What the Python side expects of this module (purposelimit/_compiled.py, API): a
   build from another version of the package is not used. Bump it with any change
   to the functions, classes or configure_*() arguments below. */
#define SPEEDUPS_API 3

/* Set by configure_blocks(). */
static PyObject *current_var = NULL;     /* the ContextVar holding the active block */
static PyTypeObject *active_type = NULL; /* purposelimit._context.Active */
static Py_ssize_t a_binding, a_now, a_store, a_buffer, a_audit;
static Py_ssize_t a_previous, a_scope, a_token, a_block, a_monitor;
static PyObject *epoch = NULL; /* purposelimit._engine.EPOCH */
static Py_ssize_t ep_current;
static PyObject *py_close = NULL;       /* _close(active, error) */
static PyObject *py_refuse_exit = NULL; /* _refuse_exit(block): raises RuntimeError */
static PyObject *py_enter = NULL;       /* _PyBlock.__enter__ */
static PyObject *py_enter_from = NULL;  /* _enter_from(block, active): __enter__'s tail */
static PyObject *py_exit = NULL;        /* _PyBlock.__exit__ */

/* Set by configure_guards(). */
static PyTypeObject *extra_type = NULL; /* purposelimit._records._Extra */
static Py_ssize_t e_memo, e_denials;
static PyTypeObject *denied_type = NULL; /* purposelimit.ProcessingDenied */
static newfunc denied_new = NULL;        /* its __new__ when configured (_new_denied) */
static PyObject *py_get = NULL;    /* _PyGuard.__get__(guard, obj, objtype) */
static PyObject *py_read = NULL;   /* _read(guard, obj, objtype, active) */
static PyObject *py_settle = NULL; /* _settle(guard, obj, objtype, active, memo) */
static PyObject *py_denial = NULL; /* _denial(guard, memo, audit, extra) -> ProcessingDenied */

static PyObject *empty_tuple;
static PyObject *str_extend, *str_token, *str_scope;
static PyObject *str_version, *str_limit, *str_activate, *str_under, *str_field_tags;

/* The offset of the slot *name* of class *cls* (a member descriptor of an object slot). */
static int
slot_offset(PyObject *cls, PyObject *name, Py_ssize_t *offset)
{
    PyObject *descr = PyObject_GetAttr(cls, name);
    if (descr == NULL) {
        return -1;
    }
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%R.%U is not a slot", cls, name);
        Py_DECREF(descr);
        return -1;
    }
    if (PyType_Check(cls) &&
        !PyType_IsSubtype((PyTypeObject *)cls, ((PyDescrObject *)descr)->d_type)) {
        PyErr_Format(PyExc_TypeError, "%R.%U is another class's slot", cls, name);
        Py_DECREF(descr);
        return -1;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != T_OBJECT_EX && member->type != T_OBJECT) {
        PyErr_Format(PyExc_TypeError, "%R.%U is not an object slot", cls, name);
        Py_DECREF(descr);
        return -1;
    }
    *offset = member->offset;
    Py_DECREF(descr);
    return 0;
}

static int
slot_offset_str(PyObject *cls, const char *name, Py_ssize_t *offset)
{
    PyObject *key = PyUnicode_InternFromString(name);
    if (key == NULL) {
        return -1;
    }
    int result = slot_offset(cls, key, offset);
    Py_DECREF(key);
    return result;
}

static int
main_interpreter(void)
{
    if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
        PyErr_SetString(PyExc_ImportError,
                        "purposelimit._speedups runs in the main interpreter only");
        return 0;
    }
    return 1;
}

static PyObject *
in_main_interpreter(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(unused))
{
    return PyBool_FromLong(PyInterpreterState_Get() == PyInterpreterState_Main());
}

static PyObject *
configure_blocks(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *var, *active, *epoch_obj, *close, *refuse, *enter, *enter_from, *exit;
    if (!main_interpreter()) {
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!OOOOOO:configure_blocks", &PyContextVar_Type, &var,
                          &PyType_Type, &active, &epoch_obj, &close, &refuse, &enter,
                          &enter_from, &exit)) {
        return NULL;
    }
    Py_ssize_t offsets[10];
    const char *names[10] = {"binding", "now",   "store", "buffer", "audit",
                             "previous", "scope", "token", "block", "monitor"};
    for (int i = 0; i < 10; i++) {
        if (slot_offset_str(active, names[i], &offsets[i]) < 0) {
            return NULL;
        }
    }
    Py_ssize_t current;
    if (slot_offset_str((PyObject *)Py_TYPE(epoch_obj), "current", &current) < 0) {
        return NULL;
    }
    a_binding = offsets[0];
    a_now = offsets[1];
    a_store = offsets[2];
    a_buffer = offsets[3];
    a_audit = offsets[4];
    a_previous = offsets[5];
    a_scope = offsets[6];
    a_token = offsets[7];
    a_block = offsets[8];
    a_monitor = offsets[9];
    ep_current = current;
    Py_XSETREF(current_var, Py_NewRef(var));
    Py_XSETREF(active_type, (PyTypeObject *)Py_NewRef(active));
    Py_XSETREF(epoch, Py_NewRef(epoch_obj));
    Py_XSETREF(py_close, Py_NewRef(close));
    Py_XSETREF(py_refuse_exit, Py_NewRef(refuse));
    Py_XSETREF(py_enter, Py_NewRef(enter));
    Py_XSETREF(py_enter_from, Py_NewRef(enter_from));
    Py_XSETREF(py_exit, Py_NewRef(exit));
    Py_RETURN_NONE;
}

static PyObject *
configure_guards(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *extra, *get, *read, *settle, *denial, *denied;
    if (!main_interpreter()) {
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!OOOOO!:configure_guards", &PyType_Type, &extra, &get, &read,
                          &settle, &denial, &PyType_Type, &denied)) {
        return NULL;
    }
    if (!PyType_IsSubtype((PyTypeObject *)denied, (PyTypeObject *)PyExc_BaseException)) {
        PyErr_SetString(PyExc_TypeError, "configure_guards: the denial type is an exception");
        return NULL;
    }
    if (current_var == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure_blocks() comes first");
        return NULL;
    }
    Py_ssize_t memo, denials;
    if (slot_offset_str(extra, "memo", &memo) < 0 ||
        slot_offset_str(extra, "denials", &denials) < 0) {
        return NULL;
    }
    e_memo = memo;
    e_denials = denials;
    Py_XSETREF(denied_type, (PyTypeObject *)Py_NewRef(denied));
    denied_new = denied_type->tp_new;
    Py_XSETREF(py_denial, Py_NewRef(denial));
    Py_XSETREF(extra_type, (PyTypeObject *)Py_NewRef(extra));
    Py_XSETREF(py_get, Py_NewRef(get));
    Py_XSETREF(py_read, Py_NewRef(read));
    Py_XSETREF(py_settle, Py_NewRef(settle));
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------- Guard */

typedef struct {
    PyObject_HEAD
    PyObject *member;        /* the field's slot (a member descriptor) */
    descrgetfunc member_get; /* its tp_descr_get */
    PyObject *owner;         /* the record class the guard is installed on, once bound */
    Py_ssize_t extra_offset; /* the offset of the owner's field_tags slot */
    Py_ssize_t index;        /* the field's memo index */
} GuardObject;

static int
guard_traverse(PyObject *op, visitproc visit, void *arg)
{
    GuardObject *self = (GuardObject *)op;
    Py_VISIT(self->member);
    Py_VISIT(self->owner);
    return 0;
}

static int
guard_clear(PyObject *op)
{
    GuardObject *self = (GuardObject *)op;
    Py_CLEAR(self->owner); /* first: an unbound guard always takes the Python path */
    self->member_get = NULL;
    Py_CLEAR(self->member);
    return 0;
}

static void
guard_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    guard_clear(op);
    Py_TYPE(op)->tp_free(op);
}

/* Hand the read to the Python reference, which starts from the beginning. */
static PyObject *
guard_python(PyObject *self, PyObject *obj, PyObject *type)
{
    if (py_get == NULL || !main_interpreter()) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "purposelimit._speedups is not configured");
        }
        return NULL;
    }
    return PyObject_CallFunctionObjArgs(py_get, self, obj ? obj : Py_None, type ? type : Py_None,
                                        NULL);
}

/* Whether the block is in monitor mode (1 or 0), or -1 with an exception set. */
static int
guard_monitor(PyObject *active)
{
    PyObject *monitor = SLOT(active, a_monitor);
    if (monitor == NULL) {
        PyErr_SetString(PyExc_AttributeError, "monitor");
        return -1;
    }
    return PyObject_IsTrue(monitor);
}

/* Raise the denial of a memoised denied read, as _denial() makes it: its args are
   the ones kept for this memo in the record's _Extra.denials, else _denial() makes
   (and keeps) them. *extra_offset* is the offset the read started with. */
static void
guard_deny(PyObject *op, PyObject *obj, Py_ssize_t extra_offset, PyObject *active, PyObject *memo)
{
    GuardObject *self = (GuardObject *)op;
    PyObject *extra = SLOT(obj, extra_offset);
    int deleted = extra == NULL;
    if (deleted) {
        /* Deleted meanwhile: what Python's `obj.field_tags` gives (an AttributeError, or
           what a class's __getattr__ returns instead, handed to _denial as is). */
        extra = PyObject_GetAttr(obj, str_field_tags);
        if (extra == NULL) {
            return;
        }
    }
    else {
        Py_INCREF(extra);
    }
    PyObject *args = NULL, *error = NULL;
    if (!deleted && Py_IS_TYPE(extra, extra_type)) {
        PyObject *denials = SLOT(extra, e_denials);
        if (denials != NULL && PyDict_CheckExact(denials)) {
            PyObject *key = PyLong_FromSsize_t(self->index);
            if (key == NULL) {
                goto done;
            }
            /* Held: a key's __eq__ run by the lookup may replace extra.denials. */
            Py_INCREF(denials);
            PyObject *hit = PyDict_GetItemWithError(denials, key);
            Py_XINCREF(hit);
            Py_DECREF(key);
            Py_DECREF(denials);
            if (hit == NULL && PyErr_Occurred()) {
                goto done;
            }
            if (hit != NULL && PyTuple_CheckExact(hit) && PyTuple_GET_SIZE(hit) == 2 &&
                PyTuple_GET_ITEM(hit, 0) == memo && PyTuple_CheckExact(PyTuple_GET_ITEM(hit, 1))) {
                args = Py_NewRef(PyTuple_GET_ITEM(hit, 1));
            }
            Py_XDECREF(hit);
        }
    }
    if (args != NULL) {
        /* As _denial(): ProcessingDenied.__new__ (no __init__), then the shared args. */
        error = denied_new(denied_type, empty_tuple, NULL);
        if (error != NULL && !PyObject_TypeCheck(error, denied_type)) {
            PyErr_SetString(PyExc_TypeError, "ProcessingDenied.__new__ made something else");
            Py_CLEAR(error);
        }
        if (error != NULL) {
            Py_XSETREF(((PyBaseExceptionObject *)error)->args, args);
            args = NULL;
        }
    }
    else {
        PyObject *audit = SLOT(active, a_audit);
        error = PyObject_CallFunctionObjArgs(py_denial, op, memo, audit ? audit : Py_None, extra,
                                             NULL);
    }
    if (error != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(error), error);
    }
done:
    Py_XDECREF(args);
    Py_XDECREF(error);
    Py_DECREF(extra);
}

/* memo[3] == version, as Python's `==` (no identity shortcut but for exact ints). */
static int
same_version(PyObject *expected, PyObject *version)
{
    if (PyLong_CheckExact(expected) && PyLong_CheckExact(version)) {
        return PyObject_RichCompareBool(expected, version, Py_EQ);
    }
    PyObject *equal = PyObject_RichCompare(expected, version, Py_EQ);
    if (equal == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(equal);
    Py_DECREF(equal);
    return truth;
}

/* Append the four items of a read's audit entry: all of them, or none. */
static int
audit_entry(PyObject *buffer, PyObject *active, PyObject *guard, PyObject *memo, PyObject *now)
{
    if (!PyList_CheckExact(buffer)) {
        PyObject *entry = PyTuple_Pack(4, active, guard, memo, now);
        if (entry == NULL) {
            return -1;
        }
        PyObject *done = PyObject_CallMethodOneArg(buffer, str_extend, entry);
        Py_DECREF(entry);
        Py_XDECREF(done);
        return done == NULL ? -1 : 0;
    }
    Py_ssize_t before = PyList_GET_SIZE(buffer);
    if (PyList_Append(buffer, active) < 0 || PyList_Append(buffer, guard) < 0 ||
        PyList_Append(buffer, memo) < 0 || PyList_Append(buffer, now) < 0) {
#if PY_VERSION_HEX >= 0x030C0000
        PyObject *raised = PyErr_GetRaisedException();
#else
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
#endif
        if (PyList_GET_SIZE(buffer) > before) {
            (void)PyList_SetSlice(buffer, before, PyList_GET_SIZE(buffer), NULL);
        }
#if PY_VERSION_HEX >= 0x030C0000
        PyErr_SetRaisedException(raised);
#else
        PyErr_Restore(type, value, traceback);
#endif
        return -1;
    }
    return 0;
}

static PyObject *
guard_get(PyObject *op, PyObject *obj, PyObject *type)
{
    GuardObject *self = (GuardObject *)op;
    PyObject *owner = self->owner;
    if (obj == NULL || obj == Py_None || owner == NULL || self->member_get == NULL ||
        py_get == NULL || PyInterpreterState_Get() != PyInterpreterState_Main() ||
        !PyObject_TypeCheck(obj, (PyTypeObject *)owner)) {
        return guard_python(op, obj, type);
    }
    /* What the read starts with stays valid whatever Python code called from here does. */
    Py_ssize_t extra_offset = self->extra_offset, index = self->index;
    PyObject *member = self->member;
    descrgetfunc member_get = self->member_get;
    PyObject *active;
    if (PyContextVar_Get(current_var, Py_None, &active) < 0) {
        return NULL;
    }
    PyObject *extra, *memos, *memo, *allowed, *clock;
    if (!Py_IS_TYPE(active, active_type) || index < 0 ||
        (extra = SLOT(obj, extra_offset)) == NULL || !Py_IS_TYPE(extra, extra_type) ||
        (memos = SLOT(extra, e_memo)) == NULL || !PyList_CheckExact(memos) ||
        index >= PyList_GET_SIZE(memos) ||
        !PyTuple_CheckExact(memo = PyList_GET_ITEM(memos, index)) ||
        PyTuple_GET_SIZE(memo) < 9 || PyTuple_GET_ITEM(memo, 0) != SLOT(active, a_binding) ||
        PyTuple_GET_ITEM(memo, 8) != op ||
        ((allowed = PyTuple_GET_ITEM(memo, 4)) != Py_True && allowed != Py_False) ||
        (clock = SLOT(active, a_now)) == NULL) {
        /* Not a memoised read: the Python reference takes it from the start. */
        Py_DECREF(active);
        return guard_python(op, obj, type);
    }
    /* Held across calls into Python code (the clock, the store's version, the limit). */
    Py_INCREF(memo);
    Py_INCREF(member);
    Py_XINCREF(type);
    Py_INCREF(clock);
    PyObject *now = PyObject_CallNoArgs(clock);
    Py_DECREF(clock);
    PyObject *version = NULL, *result = NULL;
    if (now == NULL) {
        goto done;
    }
    PyObject *low = PyTuple_GET_ITEM(memo, 1), *high = PyTuple_GET_ITEM(memo, 2);
    int fresh;
    if (PyFloat_CheckExact(now) && PyFloat_CheckExact(low) && PyFloat_CheckExact(high)) {
        double instant = PyFloat_AS_DOUBLE(now);
        fresh = PyFloat_AS_DOUBLE(low) <= instant && instant < PyFloat_AS_DOUBLE(high);
    }
    else {
        fresh = PyObject_RichCompareBool(low, now, Py_LE);
        if (fresh > 0) {
            fresh = PyObject_RichCompareBool(now, high, Py_LT);
        }
        if (fresh < 0) {
            goto done;
        }
    }
    if (fresh) {
        PyObject *store = SLOT(active, a_store);
        if (store == NULL) {
            PyErr_SetString(PyExc_AttributeError, "store");
            goto done;
        }
        Py_INCREF(store);
        version = PyObject_GetAttr(store, str_version);
        Py_DECREF(store);
        if (version == NULL) {
            goto done;
        }
        fresh = same_version(PyTuple_GET_ITEM(memo, 3), version);
        if (fresh < 0) {
            goto done;
        }
    }
    if (!fresh) {
        result = PyObject_CallFunctionObjArgs(py_read, op, obj, type ? type : Py_None, active,
                                              NULL);
        goto done;
    }
    PyObject *buffer = SLOT(active, a_buffer);
    if (buffer == NULL) {
        PyErr_SetString(PyExc_AttributeError, "buffer");
        goto done;
    }
    Py_INCREF(buffer);
    int audited = audit_entry(buffer, active, op, memo, now);
    Py_ssize_t length = audited < 0 ? 0 : PyObject_Length(buffer);
    Py_DECREF(buffer);
    if (audited < 0 || length < 0) {
        goto done;
    }
    PyObject *audit = SLOT(active, a_audit);
    if (audit == NULL) {
        PyErr_SetString(PyExc_AttributeError, "audit");
        goto done;
    }
    Py_INCREF(audit);
    PyObject *limit = PyObject_GetAttr(audit, str_limit);
    Py_DECREF(audit);
    if (limit == NULL) {
        goto done;
    }
    int room;
    if (PyLong_CheckExact(limit)) {
        int overflow;
        long long bound = PyLong_AsLongLongAndOverflow(limit, &overflow);
        room = overflow > 0 || (overflow == 0 && (long long)length < bound);
    }
    else {
        PyObject *size = PyLong_FromSsize_t(length);
        room = size == NULL ? -1 : PyObject_RichCompareBool(size, limit, Py_LT);
        Py_XDECREF(size);
    }
    Py_DECREF(limit);
    if (room < 0) {
        goto done;
    }
    if (room && allowed == Py_True) {
        result = member_get(member, obj, type);
        goto done;
    }
    if (room) {
        /* A denied read: raised here in enforce mode, settled by Python in monitor mode. */
        int monitor = guard_monitor(active);
        if (monitor < 0) {
            goto done;
        }
        if (!monitor) {
            guard_deny(op, obj, extra_offset, active, memo);
            goto done;
        }
    }
    result = PyObject_CallFunctionObjArgs(py_settle, op, obj, type ? type : Py_None, active, memo,
                                          NULL);
done:
    Py_XDECREF(version);
    Py_XDECREF(now);
    Py_XDECREF(type);
    Py_DECREF(member);
    Py_DECREF(memo);
    Py_DECREF(active);
    return result;
}

static int
guard_init(PyObject *Py_UNUSED(op), PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwargs))
{
    return 0; /* the Python subclass's __init__ sets _member and index */
}

static PyObject *
guard_get_member(PyObject *op, void *Py_UNUSED(closure))
{
    GuardObject *self = (GuardObject *)op;
    if (self->member == NULL) {
        PyErr_SetString(PyExc_AttributeError, "_member");
        return NULL;
    }
    return Py_NewRef(self->member);
}

static int
guard_set_member(PyObject *op, PyObject *value, void *Py_UNUSED(closure))
{
    GuardObject *self = (GuardObject *)op;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "_member cannot be deleted");
        return -1;
    }
    if (self->member != NULL) {
        /* Reads use the slot given first (as the Python `_get`): it is set once. */
        PyErr_SetString(PyExc_AttributeError, "a guard's _member is set once");
        return -1;
    }
    descrgetfunc get = Py_TYPE(value)->tp_descr_get;
    if (get == NULL) {
        PyErr_SetString(PyExc_TypeError, "_member must be a descriptor");
        return -1;
    }
    Py_XSETREF(self->member, Py_NewRef(value));
    self->member_get = get;
    return 0;
}

static PyObject *
guard_bind(PyObject *op, PyObject *owner)
{
    GuardObject *self = (GuardObject *)op;
    if (!PyType_Check(owner)) {
        PyErr_SetString(PyExc_TypeError, "_bind() takes the record class");
        return NULL;
    }
    if (self->owner != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a guard is bound once, to its record class");
        return NULL;
    }
    Py_ssize_t offset;
    if (slot_offset(owner, str_field_tags, &offset) < 0) {
        return NULL;
    }
    self->extra_offset = offset;
    Py_XSETREF(self->owner, Py_NewRef(owner));
    Py_RETURN_NONE;
}

/* `_get`: the slot's getter, as the Python reference keeps it; derived from `_member`,
   so that every read of the compiled path, memoised or not, reads the same slot. */
static PyObject *
guard_get_getter(PyObject *op, void *Py_UNUSED(closure))
{
    GuardObject *self = (GuardObject *)op;
    if (self->member == NULL) {
        PyErr_SetString(PyExc_AttributeError, "_get");
        return NULL;
    }
    return PyObject_GetAttrString(self->member, "__get__");
}

static PyGetSetDef guard_getset[] = {
    {"_member", guard_get_member, guard_set_member, "the field's slot", NULL},
    {"_get", guard_get_getter, NULL, "the slot's getter (member.__get__)", NULL},
    {NULL},
};

static PyMemberDef guard_members[] = {
    {"index", T_PYSSIZET, offsetof(GuardObject, index), 0, "the field's memo index"},
    {NULL},
};

static PyMethodDef guard_methods[] = {
    {"_bind", guard_bind, METH_O,
     "_bind($self, owner, /)\n--\n\nBind the guard to the record class it is installed on."},
    {NULL},
};

static PyTypeObject GuardType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "purposelimit._speedups.Guard",
    .tp_doc = "The C base of a personal field's descriptor (see purposelimit._records).",
    .tp_basicsize = sizeof(GuardObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = guard_init,
    .tp_dealloc = guard_dealloc,
    .tp_traverse = guard_traverse,
    .tp_clear = guard_clear,
    .tp_descr_get = guard_get,
    .tp_getset = guard_getset,
    .tp_members = guard_members,
    .tp_methods = guard_methods,
};

/* ------------------------------------------------------------------------- Block */

typedef struct {
    PyObject_HEAD
    PyObject *cache;  /* (epoch, Active) of an entry from outside any block, or None */
    PyObject *nested; /* the Active of the last nested entry, or None */
} BlockObject;

static int
block_traverse(PyObject *op, visitproc visit, void *arg)
{
    BlockObject *self = (BlockObject *)op;
    Py_VISIT(self->cache);
    Py_VISIT(self->nested);
    return 0;
}

static int
block_clear(PyObject *op)
{
    BlockObject *self = (BlockObject *)op;
    Py_CLEAR(self->cache);
    Py_CLEAR(self->nested);
    return 0;
}

static void
block_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    block_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyObject *
block_enter(PyObject *op, PyObject *Py_UNUSED(unused))
{
    BlockObject *self = (BlockObject *)op;
    if (current_var == NULL || !main_interpreter()) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "purposelimit._speedups is not configured");
        }
        return NULL;
    }
    PyObject *active, *previous, *cache = self->cache;
    if (cache == NULL || self->nested == NULL) {
        /* Deleted: the Python reference raises the AttributeError. */
        return PyObject_CallOneArg(py_enter, op);
    }
    if (PyTuple_CheckExact(cache) && PyTuple_GET_SIZE(cache) == 2 &&
        PyTuple_GET_ITEM(cache, 0) == SLOT(epoch, ep_current)) {
        active = Py_NewRef(PyTuple_GET_ITEM(cache, 1));
    }
    else {
        active = PyObject_CallMethodNoArgs(op, str_activate);
        if (active == NULL) {
            return NULL;
        }
    }
    if (!Py_IS_TYPE(active, active_type)) {
        /* Something else than an exact Active: the Python reference enters with it. */
        PyObject *scope = PyObject_CallFunctionObjArgs(py_enter_from, op, active, NULL);
        Py_DECREF(active);
        return scope;
    }
    if (PyContextVar_Get(current_var, Py_None, &previous) < 0) {
        Py_DECREF(active);
        return NULL;
    }
    if (previous != Py_None) {
        PyObject *nested = self->nested;
        if (nested != NULL && Py_IS_TYPE(nested, active_type) &&
            SLOT(nested, a_previous) == previous && SLOT(nested, a_scope) == SLOT(active, a_scope)) {
            Py_SETREF(active, Py_NewRef(nested));
        }
        else {
            Py_SETREF(active, PyObject_CallMethodObjArgs(op, str_under, active, previous, NULL));
        }
    }
    Py_DECREF(previous);
    if (active == NULL) {
        return NULL;
    }
    if (!Py_IS_TYPE(active, active_type)) {
        /* _under() gave something else than an exact Active: set it as Python does. */
        PyObject *token = PyContextVar_Set(current_var, active);
        if (token == NULL || PyObject_SetAttr(active, str_token, token) < 0) {
            Py_XDECREF(token);
            Py_DECREF(active);
            return NULL;
        }
        Py_DECREF(token);
        PyObject *scope = PyObject_GetAttr(active, str_scope);
        Py_DECREF(active);
        return scope;
    }
    PyObject *token = PyContextVar_Set(current_var, active);
    if (token == NULL) {
        Py_DECREF(active);
        return NULL;
    }
    Py_XSETREF(SLOT(active, a_token), token);
    PyObject *scope = SLOT(active, a_scope);
    if (scope == NULL) {
        PyErr_SetString(PyExc_AttributeError, "scope");
    }
    else {
        Py_INCREF(scope);
    }
    Py_DECREF(active);
    return scope;
}

static PyObject *
block_exit(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (current_var == NULL || !main_interpreter()) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "purposelimit._speedups is not configured");
        }
        return NULL;
    }
    if (nargs != 3 || kwnames != NULL) {
        /* Called otherwise than by a with statement: the Python reference parses it. */
        Py_ssize_t given = nargs + (kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames));
        PyObject **stack = PyMem_New(PyObject *, (size_t)given + 1);
        if (stack == NULL) {
            return PyErr_NoMemory();
        }
        stack[0] = op;
        for (Py_ssize_t i = 0; i < given; i++) {
            stack[i + 1] = args[i];
        }
        PyObject *result = PyObject_Vectorcall(py_exit, stack, nargs + 1, kwnames);
        PyMem_Free(stack);
        return result;
    }
    PyObject *active;
    if (PyContextVar_Get(current_var, Py_None, &active) < 0) {
        return NULL;
    }
    if (active != Py_None && !Py_IS_TYPE(active, active_type)) {
        /* Something else than an exact Active: the Python reference exits. */
        Py_DECREF(active);
        return PyObject_Vectorcall(py_exit, (PyObject *[]){op, args[0], args[1], args[2]}, 4,
                                   NULL);
    }
    if (active == Py_None || SLOT(active, a_block) != op) {
        Py_DECREF(active);
        return PyObject_CallOneArg(py_refuse_exit, op);
    }
    /* Held: setting the ContextVar allocates, which may run a finalizer changing them. */
    PyObject *token = SLOT(active, a_token);
    token = Py_NewRef(token ? token : Py_None);
    int reset = PyContextVar_Reset(current_var, token);
    Py_DECREF(token);
    if (reset < 0) {
        if (!PyErr_ExceptionMatches(PyExc_RuntimeError) &&
            !PyErr_ExceptionMatches(PyExc_TypeError) && !PyErr_ExceptionMatches(PyExc_ValueError)) {
            Py_DECREF(active);
            return NULL;
        }
        /* The token is another context's, or already used: set the value back. */
        PyErr_Clear();
        PyObject *previous = SLOT(active, a_previous);
        previous = Py_NewRef(previous ? previous : Py_None);
        PyObject *restored = PyContextVar_Set(current_var, previous);
        Py_DECREF(previous);
        if (restored == NULL) {
            Py_DECREF(active);
            return NULL;
        }
        Py_DECREF(restored);
    }
    PyObject *buffer = SLOT(active, a_buffer);
    int pending = buffer == NULL ? 0 : PyObject_IsTrue(buffer);
    if (pending < 0) {
        Py_DECREF(active);
        return NULL;
    }
    if (pending) {
        PyObject *closed = PyObject_CallFunctionObjArgs(py_close, active, args[1], NULL);
        if (closed == NULL) {
            Py_DECREF(active);
            return NULL;
        }
        Py_DECREF(closed);
    }
    Py_DECREF(active);
    Py_RETURN_NONE;
}

static PyMemberDef block_members[] = {
    {"_cache", T_OBJECT_EX, offsetof(BlockObject, cache), 0, "(epoch, Active) or None"},
    {"_nested", T_OBJECT_EX, offsetof(BlockObject, nested), 0, "the last nested Active or None"},
    {NULL},
};

static PyMethodDef block_methods[] = {
    {"__enter__", block_enter, METH_NOARGS,
     "__enter__($self, /)\n--\n\nEnter the block: bind its purpose; return its scope."},
    {"__exit__", (PyCFunction)(void (*)(void))block_exit, METH_FASTCALL | METH_KEYWORDS,
     "__exit__($self, exc_type, exc, tb)\n--\n\n"
     "Exit the block: restore the previous one and drain the audit buffer."},
    {NULL},
};

static PyTypeObject BlockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "purposelimit._speedups.Block",
    .tp_doc = "The C base of processing (see purposelimit._context).",
    .tp_basicsize = sizeof(BlockObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = block_dealloc,
    .tp_traverse = block_traverse,
    .tp_clear = block_clear,
    .tp_members = block_members,
    .tp_methods = block_methods,
};

/* ------------------------------------------------------------------------- audit events */

/* Set by configure_events(): AuditEvent, a frozen slotted attrs class whose fields
   have no validator, converter or default to apply (checked by the caller). */
#define MAX_EVENT_FIELDS 32
static PyTypeObject *event_type = NULL;
static Py_ssize_t event_offsets[MAX_EVENT_FIELDS];
static Py_ssize_t event_fields = 0;

static PyObject *
configure_events(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *cls, *names;
    if (!main_interpreter()) {
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!:configure_events", &PyType_Type, &cls, &PyTuple_Type,
                          &names)) {
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(names);
    if (count == 0 || count > MAX_EVENT_FIELDS) {
        PyErr_SetString(PyExc_ValueError, "configure_events: 1 to 32 field names");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)cls;
    if (type->tp_base != &PyBaseObject_Type || type->tp_new != PyBaseObject_Type.tp_new) {
        PyErr_SetString(PyExc_TypeError, "configure_events: a plain slotted class is expected");
        return NULL;
    }
    Py_ssize_t offsets[MAX_EVENT_FIELDS];
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        if (!PyUnicode_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "configure_events: field names are strings");
            return NULL;
        }
        if (slot_offset(cls, name, &offsets[i]) < 0) {
            return NULL;
        }
        for (Py_ssize_t j = 0; j < i; j++) {
            if (offsets[j] == offsets[i]) {
                PyErr_SetString(PyExc_ValueError, "configure_events: a field named twice");
                return NULL;
            }
        }
    }
    memcpy(event_offsets, offsets, sizeof(offsets[0]) * (size_t)count);
    event_fields = count;
    Py_XSETREF(event_type, (PyTypeObject *)Py_NewRef(cls));
    Py_RETURN_NONE;
}

/* new_event(*values): an AuditEvent with its fields set in order, as its __init__ would. */
static PyObject *
new_event(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (event_type == NULL || !main_interpreter()) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "configure_events() comes first");
        }
        return NULL;
    }
    if (nargs != event_fields) {
        PyErr_Format(PyExc_TypeError, "new_event takes %zd values (%zd given)", event_fields,
                     nargs);
        return NULL;
    }
    PyObject *event = event_type->tp_alloc(event_type, 0);
    if (event == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        SLOT(event, event_offsets[i]) = Py_NewRef(args[i]);
    }
    return event;
}

/* ------------------------------------------------------------------------- module */

static PyMethodDef module_methods[] = {
    {"configure_blocks", configure_blocks, METH_VARARGS,
     "configure_blocks(var, Active, epoch, close, refuse_exit, enter, enter_from, exit)"},
    {"configure_events", configure_events, METH_VARARGS,
     "configure_events(AuditEvent, field_names)"},
    {"new_event", (PyCFunction)(void (*)(void))new_event, METH_FASTCALL,
     "new_event(*values)\n--\n\nAn AuditEvent with its fields set in order."},
    {"in_main_interpreter", in_main_interpreter, METH_NOARGS,
     "in_main_interpreter()\n--\n\nWhether this is the main interpreter (the only one "
     "the module configures itself in)."},
    {"configure_guards", configure_guards, METH_VARARGS,
     "configure_guards(Extra, get, read, settle, denial, ProcessingDenied)"},
    {NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "purposelimit._speedups",
    .m_doc = "The read path's common case in C; purposelimit works without it.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&GuardType) < 0 || PyType_Ready(&BlockType) < 0) {
        return NULL;
    }
    str_version = PyUnicode_InternFromString("version");
    str_limit = PyUnicode_InternFromString("_limit");
    str_activate = PyUnicode_InternFromString("_activate");
    str_under = PyUnicode_InternFromString("_under");
    str_field_tags = PyUnicode_InternFromString("field_tags");
    empty_tuple = PyTuple_New(0);
    str_extend = PyUnicode_InternFromString("extend");
    str_token = PyUnicode_InternFromString("token");
    str_scope = PyUnicode_InternFromString("scope");
    if (!str_version || !str_limit || !str_activate || !str_under || !str_field_tags ||
        !empty_tuple || !str_extend || !str_token || !str_scope) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&speedups_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "API", SPEEDUPS_API) < 0 ||
        PyModule_AddObjectRef(module, "Guard", (PyObject *)&GuardType) < 0 ||
        PyModule_AddObjectRef(module, "Block", (PyObject *)&BlockType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
