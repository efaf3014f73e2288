import pickle, numpy as np, collections
DT = {"FloatStorage": np.float32, "LongStorage": np.int64, "IntStorage": np.int32, "HalfStorage": np.float16, "DoubleStorage": np.float64}
class Storage:
    def __init__(s, dtype): s.dtype, s.data = dtype, None
def rebuild(storage, offset, size, stride, *a):
    return (storage, offset, tuple(size), tuple(stride))
class U(pickle.Unpickler):
    def __init__(s, f, store): super().__init__(f); s.store = store
    def find_class(s, mod, name):
        if mod == "torch._utils" and name == "_rebuild_tensor_v2": return rebuild
        if mod == "torch" and name in DT: return name
        if mod == "collections" and name == "OrderedDict": return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing {mod}.{name}")
    def persistent_load(s, pid):
        kind, stype, key, loc, numel, view = pid
        assert kind == "storage" and view is None
        return s.store.setdefault(key, Storage(DT[stype]))
def load(path):
    store = {}
    with open(path, "rb") as f:
        for _ in range(3): pickle.load(f)
        result = U(f, store).load()
        keys = pickle.load(f)
        for k in keys:
            st = store[k]
            n = int(np.frombuffer(f.read(8), "<i8")[0])
            st.data = np.frombuffer(f.read(n * np.dtype(st.dtype).itemsize), st.dtype)
    out = {}
    for name, (st, off, size, stride) in result.items():
        item = np.dtype(st.dtype).itemsize
        out[name] = np.lib.stride_tricks.as_strided(st.data[off:], size, [s * item for s in stride]).copy()
    return out
if __name__ == "__main__":
    import sys
    sd = load(sys.argv[1])
    for k, v in list(sd.items())[:12]: print(k, v.shape, v.dtype)
    print(len(sd), [k for k in sd if not k.startswith("_blocks")])
