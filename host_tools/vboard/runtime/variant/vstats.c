// `_vstats`: what the virtual board's bench reads about the heap, never the firmware.
// gc_alloc, gc_realloc and gc_collect are wrapped at link time (build.py: -Wl,--wrap=...), so
// the count of collections and the bytes allocated since boot can be read in steady state:
//   import _vstats; _vstats.gc_stats() -> (collections, bytes_allocated, allocations)
#include "py/gc.h"
#include "py/obj.h"
#include "py/runtime.h"

static mp_uint_t n_collections;
static mp_uint_t n_allocations;
static unsigned long long n_bytes;

void *__real_gc_alloc(size_t n_bytes, unsigned int alloc_flags);
void *__real_gc_realloc(void *ptr, size_t n_bytes, bool allow_move);
void __real_gc_collect(void);

void *__wrap_gc_alloc(size_t n, unsigned int alloc_flags) {
    n_allocations++;
    n_bytes += n;
    return __real_gc_alloc(n, alloc_flags);
}

void *__wrap_gc_realloc(void *ptr, size_t n, bool allow_move) {
    // Growth counts as allocation (a list or bytearray that grows takes new heap).
    size_t old = ptr ? gc_nbytes(ptr) : 0;
    if (n > old) {
        n_allocations++;
        n_bytes += n - old;
    }
    return __real_gc_realloc(ptr, n, allow_move);
}

void __wrap_gc_collect(void) {
    n_collections++;
    __real_gc_collect();
}

static mp_obj_t vstats_gc_stats(void) {
    mp_obj_t items[3] = {
        mp_obj_new_int_from_uint(n_collections),
        mp_obj_new_int_from_ull(n_bytes),
        mp_obj_new_int_from_uint(n_allocations),
    };
    return mp_obj_new_tuple(3, items);
}
static MP_DEFINE_CONST_FUN_OBJ_0(vstats_gc_stats_obj, vstats_gc_stats);

static const mp_rom_map_elem_t vstats_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR__vstats) },
    { MP_ROM_QSTR(MP_QSTR_gc_stats), MP_ROM_PTR(&vstats_gc_stats_obj) },
};
static MP_DEFINE_CONST_DICT(vstats_globals, vstats_globals_table);

const mp_obj_module_t vstats_module = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&vstats_globals,
};

MP_REGISTER_MODULE(MP_QSTR__vstats, vstats_module);
