//! A minimal pickle reader: just enough of Python's pickle machine (protocols 2 to 5) to read CIFAR-100's python
//! files (whether Python 2's cPickle wrote them, as the official ones, or a Python 3 re-saved them) and the
//! `data.pkl` of a PyTorch checkpoint (a state_dict of tensors).
//!
//! It never runs code. Pickles name Python callables (`GLOBAL`) and ask for them to be called (`REDUCE`); this
//! reader knows only the few a numpy array, a byte string and a torch tensor need (`numpy.dtype`, numpy's
//! array reconstructors, `_codecs.encode`, `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, the
//! torch storage classes) and rebuilds their results as plain data. Any other callable is an error.
//!
//! Hostile input is bounded: every length is checked against the bytes that are left before anything is
//! allocated, and [`Limits`] caps the stack, the memo, the number of containers and the number of values. No
//! code walks the parsed tree recursively, and tearing it down is iterative too (see [`Items`]), so a pickle
//! of 100,000 nested tuples is refused by the container limit and could not overflow the stack anyway.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

/// A value on the pickle machine's stack. Lists, dicts and arrays are shared (`Rc`), as in Python: the memo
/// and the stack may refer to one object, and later opcodes mutate it in place.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// No CIFAR-100 file holds a float; the value is kept for tests and messages.
    Float(#[allow(dead_code)] f64),
    Bytes(Rc<Vec<u8>>),
    Str(Rc<str>),
    Tuple(Rc<Items>),
    List(Rc<RefCell<Items>>),
    /// Entries in insertion order; a repeated key's last entry wins, as in Python.
    Dict(Rc<RefCell<Pairs>>),
    Global(Global),
    /// A numpy dtype, by its type string (`"u1"`, `"<i8"`, ...).
    Dtype(Rc<str>),
    Array(Rc<RefCell<NdArray>>),
    /// A torch storage named by a persistent id: its element type, its record in the zip, its length.
    Storage(Rc<TorchStorage>),
    /// A torch tensor: a view (offset, size, stride, in elements) of a storage.
    Tensor(Rc<TorchTensor>),
}

/// The items of a tuple or list. Dropping them is iterative: a container that holds the last reference to
/// another hands that one's items to a work list instead of recursing, so no nesting depth can overflow the
/// stack while a parse tree is freed.
#[derive(Debug, Default)]
pub(crate) struct Items(pub Vec<Value>);

/// The entries of a dict, freed as iteratively as [`Items`].
#[derive(Debug, Default)]
pub(crate) struct Pairs(pub Vec<(Value, Value)>);

impl Deref for Items {
    type Target = Vec<Value>;
    fn deref(&self) -> &Vec<Value> {
        &self.0
    }
}

impl DerefMut for Items {
    fn deref_mut(&mut self) -> &mut Vec<Value> {
        &mut self.0
    }
}

impl Deref for Pairs {
    type Target = Vec<(Value, Value)>;
    fn deref(&self) -> &Vec<(Value, Value)> {
        &self.0
    }
}

impl DerefMut for Pairs {
    fn deref_mut(&mut self) -> &mut Vec<(Value, Value)> {
        &mut self.0
    }
}

impl Drop for Items {
    fn drop(&mut self) {
        dismantle(std::mem::take(&mut self.0));
    }
}

impl Drop for Pairs {
    fn drop(&mut self) {
        dismantle(std::mem::take(&mut self.0).into_iter().flat_map(|(k, v)| [k, v]).collect());
    }
}

/// Frees values with a work list: each container whose last reference is here gives up its children to the
/// list before it is dropped (empty), so the drop of one value never runs the drop of a nested one.
fn dismantle(mut work: Vec<Value>) {
    while let Some(v) = work.pop() {
        match v {
            Value::Tuple(rc) => {
                if let Ok(mut items) = Rc::try_unwrap(rc) {
                    work.append(&mut items.0);
                }
            }
            Value::List(rc) => {
                if let Ok(cell) = Rc::try_unwrap(rc) {
                    work.append(&mut cell.into_inner().0);
                }
            }
            Value::Dict(rc) => {
                if let Ok(cell) = Rc::try_unwrap(rc) {
                    let mut pairs = cell.into_inner();
                    work.extend(std::mem::take(&mut pairs.0).into_iter().flat_map(|(k, v)| [k, v]));
                }
            }
            _ => {}
        }
    }
}

/// A storage of a PyTorch checkpoint, as its persistent id describes it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TorchStorage {
    /// numpy-style type code of its elements: `f4`, `f8`, `f2`, `bf2`, `i8`, `i4`, `u1`, ...
    pub dtype: &'static str,
    /// The record under `<archive>/data/` that holds its bytes.
    pub key: String,
    /// Number of elements the storage claims.
    pub numel: u64,
}

/// A tensor of a PyTorch checkpoint: a strided view of a storage.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TorchTensor {
    pub storage: TorchStorage,
    pub offset: u64,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

/// Caps on what one pickle may make the reader hold. The defaults are sized to the real files with wide
/// headroom: CIFAR-100's training pickle holds ~150,000 values (50,000 file names, 100,000 labels), ~50,000
/// memo entries, under 20 containers and a stack under 1,100 deep; a state_dict of MobileNetV3-Large ~300
/// tensors, each a handful of tuples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub max_stack: usize,
    pub max_memo: usize,
    pub max_containers: usize,
    pub max_values: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_stack: 100_000, max_memo: 1_000_000, max_containers: 50_000, max_values: 5_000_000 }
    }
}

/// The Python callables this reader can rebuild.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Global {
    /// `_codecs.encode`: how Python 3 writes `bytes` at protocol 2.
    CodecsEncode,
    /// `builtins.bytes`: Python 3's protocol-2 form of an empty byte string.
    Bytes,
    NdArray,
    Dtype,
    /// `numpy.core.multiarray._reconstruct`: an empty array that a later `BUILD` fills.
    Reconstruct,
    /// `numpy.core.numeric._frombuffer`: a whole array at once (protocol 5).
    FromBuffer,
    /// `collections.OrderedDict`: the type of a state_dict (and of a tensor's empty backward hooks).
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2`: a tensor from (storage, offset, size, stride, ...).
    RebuildTensor,
    /// `torch._utils._rebuild_parameter`: an `nn.Parameter` around a tensor.
    RebuildParameter,
    /// `torch.FloatStorage` and its kin, by element type code.
    TorchStorage(&'static str),
}

/// A numpy array as pickled: shape, dtype, memory order and raw bytes.
#[derive(Debug, Default)]
pub(crate) struct NdArray {
    pub shape: Vec<usize>,
    pub dtype: String,
    pub fortran: bool,
    pub data: Rc<Vec<u8>>,
    /// False until `BUILD` gave a reconstructed array its state.
    pub built: bool,
}

/// Why a pickle could not be read, and the byte offset of the opcode (or field) at fault.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PickleError {
    pub offset: usize,
    pub message: String,
}

impl Value {
    /// The Python-ish name of the value's type, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Bytes(_) => "bytes",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "class or function",
            Value::Dtype(_) => "numpy dtype",
            Value::Array(_) => "numpy array",
            Value::Storage(_) => "torch storage",
            Value::Tensor(_) => "torch tensor",
        }
    }

    /// A dict's value for a key given as text; the key may be pickled as `bytes` (Python 2 `str`) or `str`.
    pub fn get(&self, key: &str) -> Option<Value> {
        let Value::Dict(d) = self else { return None };
        let d = d.borrow();
        d.iter().rev().find(|(k, _)| k.text().as_deref() == Some(key)).map(|(_, v)| v.clone())
    }

    /// Text of a `bytes` (decoded as UTF-8) or `str` value.
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Bytes(b) => std::str::from_utf8(b).ok().map(str::to_string),
            Value::Str(s) => Some(s.to_string()),
            _ => None,
        }
    }

    /// The items of a list or tuple.
    pub fn items(&self) -> Option<Vec<Value>> {
        match self {
            Value::List(l) => Some(l.borrow().0.clone()),
            Value::Tuple(t) => Some(t.0.clone()),
            _ => None,
        }
    }
}

impl NdArray {
    /// Bytes per element for the numeric dtypes (`b`ool, `i`nt, `u`int, `f`loat); `None` for others.
    pub(crate) fn item_size(&self) -> Option<usize> {
        let t = self.dtype.trim_start_matches(['<', '>', '|', '=']);
        let (kind, size) = t.split_at_checked(1)?;
        matches!(kind, "b" | "i" | "u" | "f").then(|| size.parse().ok()).flatten()
    }
}

const PROTO: u8 = 0x80;
const STOP: u8 = b'.';

/// Reads a whole pickle and returns the object it describes, within the default [`Limits`].
pub(crate) fn parse(data: &[u8]) -> Result<Value, PickleError> {
    parse_with(data, Limits::default())
}

/// Reads a whole pickle within `limits`.
pub(crate) fn parse_with(data: &[u8], limits: Limits) -> Result<Value, PickleError> {
    match data.first() {
        Some(&PROTO) => {}
        Some(&b) => {
            return Err(PickleError {
                offset: 0,
                message: format!("not a pickle of protocol 2 or later (it starts with byte 0x{b:02x}, not 0x80)"),
            })
        }
        None => return Err(PickleError { offset: 0, message: "the file is empty".into() }),
    }
    let mut m = Machine {
        data,
        pos: 0,
        op_at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        limits,
        containers: 0,
        values: 0,
    };
    loop {
        m.op_at = m.pos;
        if m.pos == data.len() {
            return Err(m.err(format!("truncated: the file ends at byte {} before the pickle's end", m.pos)));
        }
        let op = m.u8("an opcode")?;
        if op == STOP {
            return m.pop();
        }
        m.step(op)?;
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Where the opcode being run starts, for error messages.
    op_at: usize,
    stack: Vec<Value>,
    /// Stack lengths at each `MARK`.
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    limits: Limits,
    /// Tuples, lists and dicts made so far.
    containers: usize,
    /// Values pushed so far.
    values: usize,
}

impl<'a> Machine<'a> {
    fn err(&self, message: impl Into<String>) -> PickleError {
        PickleError { offset: self.op_at, message: message.into() }
    }

    /// The next `n` bytes; a clear error, and no allocation, when the file is shorter.
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], PickleError> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(PickleError {
                offset: self.pos,
                message: format!(
                    "truncated: {what} needs {n} bytes at byte {}, but the file ends at byte {}",
                    self.pos,
                    self.data.len()
                ),
            });
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], PickleError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8, PickleError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, PickleError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A newline-terminated line (the text arguments of `GLOBAL`).
    fn line(&mut self, what: &str) -> Result<&'a str, PickleError> {
        let rest = &self.data[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.err(format!("truncated: {what} has no end of line before the end of the file")));
        };
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).map_err(|_| self.err(format!("{what} is not text")))
    }

    /// Pushes a value, within the limits on the stack, the values and the containers.
    fn push(&mut self, v: Value) -> Result<(), PickleError> {
        self.values += 1;
        if matches!(v, Value::Tuple(_) | Value::List(_) | Value::Dict(_)) {
            self.containers += 1;
            if self.containers > self.limits.max_containers {
                return Err(self.err(format!(
                    "more than {} tuples, lists and dicts: far more than the files read here hold",
                    self.limits.max_containers
                )));
            }
        }
        if self.values > self.limits.max_values {
            return Err(self
                .err(format!("more than {} values: far more than the files read here hold", self.limits.max_values)));
        }
        if self.stack.len() >= self.limits.max_stack {
            return Err(
                self.err(format!("the stack grows past {} values: the pickle is malformed", self.limits.max_stack))
            );
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("the stack is empty where a value was expected: the pickle is malformed"));
        }
        self.stack.pop().ok_or_else(|| self.err("empty stack"))
    }

    fn top(&self) -> Result<&Value, PickleError> {
        self.stack.last().ok_or_else(|| self.err("the stack is empty where a value was expected"))
    }

    /// The values pushed since the last `MARK`, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let mark = self.marks.pop().ok_or_else(|| self.err("no MARK before this opcode: the pickle is malformed"))?;
        Ok(self.stack.split_off(mark))
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<Value>, PickleError> {
        let mut v = (0..n).map(|_| self.pop()).collect::<Result<Vec<_>, _>>()?;
        v.reverse();
        Ok(v)
    }

    fn step(&mut self, op: u8) -> Result<(), PickleError> {
        match op {
            PROTO => {
                let p = self.u8("PROTO")?;
                if !(2..=5).contains(&p) {
                    return Err(self.err(format!("pickle protocol {p} is not supported (2 to 5 are)")));
                }
            }
            0x95 => {
                self.u64("FRAME")?; // framing only groups opcodes for buffered reading
            }
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let v = self.top()?.clone();
                self.push(v)?;
            }
            b'N' => self.push(Value::None)?,
            0x88 => self.push(Value::Bool(true))?,
            0x89 => self.push(Value::Bool(false))?,
            b'J' => {
                let v = i32::from_le_bytes(self.array("BININT")?);
                self.push(Value::Int(v.into()))?;
            }
            b'K' => {
                let v = self.u8("BININT1")?;
                self.push(Value::Int(v.into()))?;
            }
            b'M' => {
                let v = u16::from_le_bytes(self.array("BININT2")?);
                self.push(Value::Int(v.into()))?;
            }
            0x8a => {
                let n = self.u8("LONG1")?.into();
                self.long(n)?;
            }
            0x8b => {
                let n = self.u32("LONG4")?.into();
                self.long(n)?;
            }
            b'G' => {
                let v = f64::from_be_bytes(self.array("BINFLOAT")?);
                self.push(Value::Float(v))?;
            }
            _ => return self.step_text_or_container(op),
        }
        Ok(())
    }

    fn step_text_or_container(&mut self, op: u8) -> Result<(), PickleError> {
        match op {
            // Byte strings: Python 2's str (BINSTRING), Python 3's bytes (BINBYTES), bytearray (protocol 5).
            b'U' | b'C' => {
                let n = self.u8("a short string length")?.into();
                self.bytes(n)?;
            }
            b'T' | b'B' => {
                let n = self.u32("a string length")?.into();
                self.bytes(n)?;
            }
            0x8e | 0x96 => {
                let n = self.u64("a string length")?;
                self.bytes(n)?;
            }
            0x8c => {
                let n = self.u8("SHORT_BINUNICODE")?.into();
                self.unicode(n)?;
            }
            b'X' => {
                let n = self.u32("BINUNICODE")?.into();
                self.unicode(n)?;
            }
            0x8d => {
                let n = self.u64("BINUNICODE8")?;
                self.unicode(n)?;
            }
            b')' => self.push(Value::Tuple(Rc::default()))?,
            b't' => {
                let items = self.pop_mark()?;
                self.push(Value::Tuple(Rc::new(Items(items))))?;
            }
            0x85..=0x87 => {
                let items = self.pop_n(usize::from(op - 0x84))?;
                self.push(Value::Tuple(Rc::new(Items(items))))?;
            }
            b']' => self.push(Value::List(Rc::default()))?,
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Value::List(Rc::new(RefCell::new(Items(items)))))?;
            }
            b'a' => {
                let v = self.pop()?;
                self.extend_list(vec![v])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.extend_list(items)?;
            }
            b'}' => self.push(Value::Dict(Rc::default()))?,
            b'd' => {
                let items = self.pop_mark()?;
                self.push(Value::Dict(Rc::default()))?;
                self.set_items(items)?;
            }
            b's' => {
                let items = self.pop_n(2)?;
                self.set_items(items)?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.set_items(items)?;
            }
            _ => return self.step_memo_or_call(op),
        }
        Ok(())
    }

    fn step_memo_or_call(&mut self, op: u8) -> Result<(), PickleError> {
        match op {
            b'q' => {
                let i = self.u8("BINPUT")?.into();
                self.put(i)?;
            }
            b'r' => {
                let i = self.u32("LONG_BINPUT")?.into();
                self.put(i)?;
            }
            0x94 => self.put(self.memo.len() as u64)?,
            b'h' => {
                let i = self.u8("BINGET")?.into();
                self.get(i)?;
            }
            b'j' => {
                let i = self.u32("LONG_BINGET")?.into();
                self.get(i)?;
            }
            b'c' => {
                let module = self.line("GLOBAL's module")?;
                let name = self.line("GLOBAL's name")?;
                let g = self.global(module, name)?;
                self.push(Value::Global(g))?;
            }
            // BINPERSID: a reference to data outside the pickle; in a torch checkpoint, a storage record.
            b'Q' => {
                let pid = self.pop()?;
                let storage = self.persistent(pid)?;
                self.push(Value::Storage(Rc::new(storage)))?;
            }
            0x93 => {
                let parts = self.pop_n(2)?;
                let (Value::Str(module), Value::Str(name)) = (&parts[0], &parts[1]) else {
                    return Err(self.err("STACK_GLOBAL needs two strings"));
                };
                let g = self.global(module, name)?;
                self.push(Value::Global(g))?;
            }
            // REDUCE calls f(*args); NEWOBJ calls cls.__new__(cls, *args): the same for the classes known here.
            b'R' | 0x81 => {
                let args = self.pop()?;
                let f = self.pop()?;
                let v = self.call(f, args)?;
                self.push(v)?;
            }
            b'b' => {
                let state = self.pop()?;
                let obj = self.top()?.clone();
                self.build(&obj, state)?;
            }
            _ => {
                let name = if op.is_ascii_graphic() { format!(" '{}'", op as char) } else { String::new() };
                return Err(self.err(format!("unsupported pickle opcode 0x{op:02x}{name}")));
            }
        }
        Ok(())
    }

    /// LONG1 / LONG4: a little-endian two's-complement integer of `n` bytes.
    fn long(&mut self, n: u64) -> Result<(), PickleError> {
        if n > 8 {
            return Err(self.err(format!("a {n}-byte integer is too large for this reader")));
        }
        let b = self.take(n, "LONG")?;
        let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) { 0xff } else { 0 };
        let mut a = [fill; 8];
        a[..b.len()].copy_from_slice(b);
        self.push(Value::Int(i64::from_le_bytes(a)))?;
        Ok(())
    }

    fn bytes(&mut self, n: u64) -> Result<(), PickleError> {
        let b = self.take(n, "a byte string")?;
        self.push(Value::Bytes(Rc::new(b.to_vec())))?;
        Ok(())
    }

    fn unicode(&mut self, n: u64) -> Result<(), PickleError> {
        let at = self.pos;
        let b = self.take(n, "a text string")?;
        let s = std::str::from_utf8(b).map_err(|e| PickleError {
            offset: at + e.valid_up_to(),
            message: "a text string is not valid UTF-8".into(),
        })?;
        self.push(Value::Str(s.into()))?;
        Ok(())
    }

    fn extend_list(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        match self.top()? {
            Value::List(l) => {
                l.borrow_mut().extend(items);
                Ok(())
            }
            other => Err(self.err(format!("APPEND(S) on a {}, not a list", other.kind()))),
        }
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err("SETITEMS with a key but no value"));
        }
        let Value::Dict(d) = self.top()? else {
            return Err(self.err(format!("SETITEM(S) on a {}, not a dict", self.top()?.kind())));
        };
        let mut d = d.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }

    fn put(&mut self, i: u64) -> Result<(), PickleError> {
        let v = self.top()?.clone();
        if self.memo.len() >= self.limits.max_memo && !self.memo.contains_key(&i) {
            return Err(self.err(format!("more than {} memo entries: the pickle is malformed", self.limits.max_memo)));
        }
        self.memo.insert(i, v);
        Ok(())
    }

    fn get(&mut self, i: u64) -> Result<(), PickleError> {
        let v = self.memo.get(&i).cloned().ok_or_else(|| self.err(format!("memo entry {i} was never stored")))?;
        self.push(v)?;
        Ok(())
    }

    fn global(&self, module: &str, name: &str) -> Result<Global, PickleError> {
        // numpy 2 moved numpy.core to numpy._core; pickles name either.
        let g = match (module, name) {
            ("_codecs", "encode") => Global::CodecsEncode,
            ("__builtin__" | "builtins", "bytes") => Global::Bytes,
            ("numpy", "ndarray") => Global::NdArray,
            ("numpy", "dtype") => Global::Dtype,
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => Global::Reconstruct,
            ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer") => Global::FromBuffer,
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensor,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("torch", storage) if storage.ends_with("Storage") => Global::TorchStorage(
                storage_dtype(storage)
                    .ok_or_else(|| self.err(format!("torch.{storage} is not a storage type this reader knows")))?,
            ),
            _ => return Err(self.err(format!("the pickle refers to {module}.{name}, which this reader does not know"))),
        };
        Ok(g)
    }

    fn call(&self, f: Value, args: Value) -> Result<Value, PickleError> {
        let Value::Global(g) = f else {
            return Err(self.err(format!("REDUCE calls a {}, not a known class or function", f.kind())));
        };
        let Value::Tuple(args) = args else {
            return Err(self.err(format!("REDUCE's arguments are a {}, not a tuple", args.kind())));
        };
        let bad = |what: &str| self.err(format!("unexpected arguments for {g:?}: {what}"));
        match (g, args.as_slice()) {
            (Global::CodecsEncode, [Value::Str(s), Value::Str(enc)]) => {
                if !matches!(enc.to_ascii_lowercase().as_str(), "latin1" | "latin-1" | "iso-8859-1") {
                    return Err(bad("only latin1 byte strings are supported"));
                }
                let b: Option<Vec<u8>> = s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
                Ok(Value::Bytes(Rc::new(b.ok_or_else(|| bad("a character beyond latin1"))?)))
            }
            (Global::Bytes, []) => Ok(Value::Bytes(Rc::default())),
            (Global::OrderedDict, []) => Ok(Value::Dict(Rc::default())),
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            (Global::RebuildTensor, [Value::Storage(storage), Value::Int(offset), size, stride, ..])
                if args.len() >= 4 =>
            {
                let offset = u64::try_from(*offset).map_err(|_| bad("a negative storage offset"))?;
                let (size, stride) = (self.shape(size)?, self.shape(stride)?);
                if size.len() != stride.len() {
                    return Err(bad("size and stride of different lengths"));
                }
                Ok(Value::Tensor(Rc::new(TorchTensor { storage: storage.as_ref().clone(), offset, size, stride })))
            }
            (Global::RebuildParameter, [t @ Value::Tensor(_), ..]) => Ok(t.clone()),
            (Global::Dtype, [name, ..]) => Ok(Value::Dtype(name.text().ok_or_else(|| bad("dtype name"))?.into())),
            (Global::Reconstruct, [Value::Global(Global::NdArray), ..]) => {
                Ok(Value::Array(Rc::new(RefCell::new(NdArray::default()))))
            }
            (Global::FromBuffer, [Value::Bytes(buf), Value::Dtype(dtype), shape, order]) => {
                let fortran = order.text().as_deref() == Some("F");
                let a = NdArray {
                    shape: self.shape(shape)?,
                    dtype: dtype.to_string(),
                    fortran,
                    data: buf.clone(),
                    built: true,
                };
                self.check_array(&a)?;
                Ok(Value::Array(Rc::new(RefCell::new(a))))
            }
            _ => Err(bad(&format!("{} of them", args.len()))),
        }
    }

    /// BUILD: give an object its state (`__setstate__`).
    fn build(&self, obj: &Value, state: Value) -> Result<(), PickleError> {
        match obj {
            // A dtype's state (byte order, field names, ...) changes nothing for the plain dtypes read here.
            Value::Dtype(_) => Ok(()),
            // A state_dict's state is its `_metadata` (module versions): not needed to read the tensors.
            Value::Dict(_) => Ok(()),
            Value::Array(a) => {
                let Value::Tuple(s) = state else {
                    return Err(self.err(format!("an array's state is a {}, not a tuple", state.kind())));
                };
                // (version, shape, dtype, is_fortran, data); very old numpy left out the version.
                let s = match s.as_slice() {
                    [_, rest @ ..] if rest.len() == 4 => rest,
                    all => all,
                };
                let [shape, Value::Dtype(dtype), fortran, data] = s else {
                    return Err(self.err("an array's state is not (version, shape, dtype, is_fortran, data)"));
                };
                let Value::Bytes(data) = data else {
                    return Err(self.err(format!("an array's data is a {}, not raw bytes", data.kind())));
                };
                let fortran = matches!(fortran, Value::Bool(true)) || matches!(fortran, Value::Int(x) if *x != 0);
                let new = NdArray {
                    shape: self.shape(shape)?,
                    dtype: dtype.to_string(),
                    fortran,
                    data: data.clone(),
                    built: true,
                };
                self.check_array(&new)?;
                *a.borrow_mut() = new;
                Ok(())
            }
            other => Err(self.err(format!("BUILD on a {}, which this reader does not rebuild", other.kind()))),
        }
    }

    /// A torch persistent id: `('storage', torch.FloatStorage, key, location, numel)`.
    fn persistent(&self, pid: Value) -> Result<TorchStorage, PickleError> {
        let Value::Tuple(t) = &pid else {
            return Err(self.err(format!("a persistent id is a {}, not a tuple", pid.kind())));
        };
        match t.as_slice() {
            [tag, Value::Global(Global::TorchStorage(dtype)), key, _location, Value::Int(numel)]
                if tag.text().as_deref() == Some("storage") =>
            {
                let key = key.text().ok_or_else(|| self.err("a storage key that is not text"))?;
                let numel = u64::try_from(*numel).map_err(|_| self.err("a storage of negative size"))?;
                Ok(TorchStorage { dtype, key, numel })
            }
            _ => Err(self.err("a persistent id that is not ('storage', type, key, location, size)")),
        }
    }

    fn shape(&self, v: &Value) -> Result<Vec<usize>, PickleError> {
        let items = v.items().ok_or_else(|| self.err(format!("an array's shape is a {}, not a tuple", v.kind())))?;
        items
            .iter()
            .map(|d| match d {
                Value::Int(n) => usize::try_from(*n).ok(),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.err("an array's shape holds something other than sizes"))
    }

    /// The raw bytes must be exactly shape x item size.
    fn check_array(&self, a: &NdArray) -> Result<(), PickleError> {
        let item = a.item_size().ok_or_else(|| self.err(format!("numpy dtype '{}' is not supported", a.dtype)))?;
        let want = a.shape.iter().try_fold(item, |acc, &d| acc.checked_mul(d));
        if want != Some(a.data.len()) {
            return Err(self.err(format!(
                "an array of shape {:?} and dtype '{}' comes with {} bytes of data",
                a.shape,
                a.dtype,
                a.data.len()
            )));
        }
        Ok(())
    }
}

/// The element type code of a torch storage class.
fn storage_dtype(class: &str) -> Option<&'static str> {
    Some(match class {
        "FloatStorage" => "f4",
        "DoubleStorage" => "f8",
        "HalfStorage" => "f2",
        "BFloat16Storage" => "bf2",
        "LongStorage" => "i8",
        "IntStorage" => "i4",
        "ShortStorage" => "i2",
        "CharStorage" => "i1",
        "ByteStorage" => "u1",
        "BoolStorage" => "b1",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{b'a': [1, 300, -2, 70000], 'b': (1.5, None, True)}` as Python 3 writes it at protocol 4.
    const SMALL_P4: &[u8] = b"\x80\x04\x95\x2d\x00\x00\x00\x00\x00\x00\x00}\x94(C\x01a\x94]\x94(K\x01M\x2c\x01J\xfe\xff\xff\xffJ\x70\x11\x01\x00e\x8c\x01b\x94G?\xf8\x00\x00\x00\x00\x00\x00N\x88\x87\x94u.";

    #[test]
    fn reads_scalars_containers_and_keys_of_either_string_kind() {
        let v = parse(SMALL_P4).unwrap();
        let a: Vec<i64> =
            v.get("a").unwrap().items().unwrap().iter().map(|x| if let Value::Int(i) = x { *i } else { 0 }).collect();
        assert_eq!(a, vec![1, 300, -2, 70000]);
        let b = v.get("b").unwrap().items().unwrap();
        assert!(matches!(b[..], [Value::Float(f), Value::None, Value::Bool(true)] if f == 1.5));
    }

    #[test]
    fn long1_is_twos_complement() {
        // LONG1 of 2 bytes 0xff 0x7f = 32767; of 1 byte 0xff = -1; of 0 bytes = 0.
        for (bytes, want) in
            [(&b"\x80\x02\x8a\x02\xff\x7f."[..], 32767), (b"\x80\x02\x8a\x01\xff.", -1), (b"\x80\x02\x8a\x00.", 0)]
        {
            assert!(matches!(parse(bytes).unwrap(), Value::Int(i) if i == want), "{bytes:?}");
        }
    }

    #[test]
    fn truncation_and_junk_give_offsets_not_panics() {
        for cut in 0..SMALL_P4.len() {
            let e = parse(&SMALL_P4[..cut]).unwrap_err();
            assert!(e.offset <= cut, "cut {cut}: {e:?}");
        }
        let e = parse(b"hello").unwrap_err();
        assert!(e.message.contains("not a pickle") && e.offset == 0, "{e:?}");
        let e = parse(b"\x80\x02K\x01K\x02\x86\x99.").unwrap_err();
        assert!(e.message.contains("opcode 0x99") && e.offset == 7, "{e:?}");
        let e = parse(b"\x80\x02cos\nsystem\n.").unwrap_err();
        assert!(e.message.contains("os.system"), "{e:?}");
        let e = parse(b"\x80\x02h\x05.").unwrap_err();
        assert!(e.message.contains("memo entry 5"), "{e:?}");
        let e = parse(b"\x80\x02e.").unwrap_err();
        assert!(e.message.contains("MARK"), "{e:?}");
        // A length far beyond the file fails before any allocation.
        let e = parse(b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\x7f").unwrap_err();
        assert!(e.message.contains("truncated") && e.offset == 11, "{e:?}");
    }

    #[test]
    fn a_memoised_list_is_shared_not_copied() {
        // x = []; l = [x, x]; then x.append(7) through the memo: Python gives [[7], [7]].
        let l = parse(b"\x80\x02]q\x01(]q\x00h\x00eh\x00K\x07a0.").unwrap();
        let items = l.items().unwrap();
        assert_eq!(items.len(), 2);
        assert!(items.iter().all(|i| i.items().unwrap().len() == 1));
    }

    #[test]
    fn a_deep_nesting_is_refused_and_freed_without_recursion() {
        // 100,000 nested one-element tuples: over the container limit.
        let mut p = b"\x80\x02)".to_vec();
        p.extend(std::iter::repeat_n(0x85u8, 100_000));
        p.push(b'.');
        let e = parse(&p).unwrap_err();
        assert!(e.message.contains("tuples, lists and dicts"), "{e:?}");
        // Within generous limits the same tree parses, and is freed on a thread with a small stack.
        let limits = Limits { max_containers: usize::MAX, ..Limits::default() };
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let v = parse_with(&p, limits).unwrap();
                assert_eq!(v.kind(), "tuple");
                drop(v);
            })
            .unwrap();
        handle.join().unwrap();
    }

    #[test]
    fn stack_memo_and_value_counts_are_bounded() {
        let small = Limits { max_stack: 10, max_memo: 3, max_containers: 5, max_values: 50 };
        let mut p = b"\x80\x02(".to_vec();
        p.extend(std::iter::repeat_n(b'N', 20));
        let e = parse_with(&p, small).unwrap_err();
        assert!(e.message.contains("stack grows past 10"), "{e:?}");
        let e = parse_with(b"\x80\x02Nq\x00q\x01q\x02q\x03.", small).unwrap_err();
        assert!(e.message.contains("more than 3 memo entries"), "{e:?}");
        let mut p = b"\x80\x02".to_vec();
        for _ in 0..60 {
            p.extend(b"N0");
        }
        let e = parse_with(&p, small).unwrap_err();
        assert!(e.message.contains("more than 50 values"), "{e:?}");
    }

    #[test]
    fn a_torch_state_dict_entry_becomes_a_tensor_description() {
        // OrderedDict({'w': _rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', 6), 0, (2, 3), (3, 1), False,
        // OrderedDict())}), as torch.save writes it.
        let p = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQK\x00K\x02K\x03\x86K\x03K\x01\x86\x89h\x00)RtRs.";
        let v = parse(p).unwrap();
        let Some(Value::Tensor(t)) = v.get("w") else { panic!("{v:?}") };
        assert_eq!((t.storage.dtype, t.storage.key.as_str(), t.storage.numel), ("f4", "0", 6));
        assert_eq!((t.offset, t.size.clone(), t.stride.clone()), (0, vec![2, 3], vec![3, 1]));
    }
}
