//! The parsed form of a scenario: one [`Stmt`] per operation, with its line number.

/// An integer expression, kept as text and evaluated when executed (variables bound by
/// `repeat … as` change between iterations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expr(pub String);

/// How a statement names a device: a PCI `bus:dev.fn` or any expression (requester id,
/// s390 function handle or FID).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DevRef {
    /// `bb:dd.f`, already encoded as a 16-bit requester id.
    Bdf(u32),
    /// A number or expression.
    Expr(Expr),
}

/// The memory event of a [`Op::MemoryEvent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryEventKind {
    /// `discard`: balloon inflate / virtio-mem unplug.
    Discard,
    /// `populate`: balloon deflate / virtio-mem plug.
    Populate,
    /// `convert private`.
    ToPrivate,
    /// `convert shared`.
    ToShared,
    /// `expect-conversions`: page-granular layout from now on.
    ExpectConversions,
}

/// One expected host call in `expect-host-calls`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallSpec {
    /// `map IOVA GPA SIZE PERM [ok|ERROR]`.
    Map {
        /// IOVA.
        iova: Expr,
        /// Guest-physical address.
        gpa: Expr,
        /// Size.
        size: Expr,
        /// `r`, `w` or `rw`.
        perm: String,
        /// `ok` or an error name.
        result: String,
    },
    /// `unmap IOVA SIZE [BYTES|ERROR]`.
    Unmap {
        /// IOVA.
        iova: Expr,
        /// Size requested.
        size: Expr,
        /// Bytes unmapped (default: `size`), or an error name.
        result: Option<String>,
    },
    /// `unmap-all [BYTES]`.
    UnmapAll {
        /// Bytes unmapped, if given.
        bytes: Option<Expr>,
    },
}

/// What a `dma` statement expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DmaExpect {
    /// `expect ok [gpa=EXPR]`.
    Ok(Option<Expr>),
    /// `expect fault[=REASON]`.
    Fault(Option<String>),
}

/// What an interrupt-remapping statement expects (`OUTCOME` in `tests/SCENARIOS.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IrqExpect {
    /// `ok [dest=N] [vector=N] [delivery=…] [dm=…] [trigger=…] [rh=0|1] [index=N|none]`.
    Ok(Vec<(String, String)>),
    /// `fault[=NAME] [kind=KIND] [index=N|none] [recorded=0|1]`.
    Fault {
        /// The model's name of the fault, if given.
        name: Option<String>,
        /// Further fields.
        fields: Vec<(String, String)>,
    },
}

/// Which interrupt-remapping call an `irq` statement makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IrqCall {
    /// `irq request`: `RemapMode::Request`, delivered through the model's output.
    Request,
    /// `irq remap`: `RemapMode::Request` (faults recorded), the result not delivered.
    Remap,
    /// `irq route`: `RemapMode::Route`.
    Route,
    /// `irq route-set id=N`: `RouteTable::set`.
    RouteSet(Expr),
}

/// An expected invalidation notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IrqInvalidationSpec {
    /// `all`.
    All,
    /// `indices first=N count=N`.
    Indices {
        /// First index.
        first: Expr,
        /// Count.
        count: Expr,
    },
    /// `source dev=D`.
    Source(DevRef),
}

/// One line of `expect-route-updates`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteUpdateSpec {
    /// Route id.
    pub id: Expr,
    /// `changed` / `unchanged`, if given.
    pub changed: Option<bool>,
    /// The new resolution, if given.
    pub expect: Option<IrqExpect>,
}

/// One operation. See `tests/SCENARIOS.md` for the syntax and meaning of each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `model NAME key=value…`
    Model {
        /// Model name.
        name: String,
        /// Options, in order.
        opts: Vec<(String, String)>,
    },
    /// `memory SIZE` / `memory START SIZE`
    Memory {
        /// First guest-physical address.
        start: Expr,
        /// Bytes.
        size: Expr,
    },
    /// `let NAME = EXPR`
    Let {
        /// Variable.
        name: String,
        /// Value.
        value: Expr,
    },
    /// `write8|16|32|64 ADDR VALUE`
    Write {
        /// Bytes written (1, 2, 4, 8).
        width: usize,
        /// Guest-physical address.
        addr: Expr,
        /// Value (little-endian unless `be` was given).
        value: Expr,
        /// Store big-endian (s390 control blocks and tables).
        big_endian: bool,
    },
    /// `write-bytes ADDR HEX`
    WriteBytes {
        /// Guest-physical address.
        addr: Expr,
        /// Bytes.
        bytes: Vec<u8>,
    },
    /// `expect-mem8|16|32|64 ADDR VALUE [mask=M] [be]`
    ExpectMem {
        /// Bytes read.
        width: usize,
        /// Guest-physical address.
        addr: Expr,
        /// Expected value.
        value: Expr,
        /// Bits compared.
        mask: Option<Expr>,
        /// Read big-endian.
        big_endian: bool,
    },
    /// `expect-bytes ADDR HEX`
    ExpectBytes {
        /// Guest-physical address.
        addr: Expr,
        /// Expected bytes.
        bytes: Vec<u8>,
    },
    /// `mmio write OFFSET SIZE VALUE [expect-error=KIND]`
    MmioWrite {
        /// Register offset.
        offset: Expr,
        /// Access size (4 or 8 for the x86 models).
        size: Expr,
        /// Value.
        value: Expr,
        /// The model must fail the write with this error kind.
        expect_error: Option<String>,
    },
    /// `mmio read OFFSET SIZE [expect VALUE [mask MASK]]`
    MmioRead {
        /// Register offset.
        offset: Expr,
        /// Access size.
        size: Expr,
        /// Expected value and mask.
        expect: Option<(Expr, Option<Expr>)>,
    },
    /// `dma dev=D [pasid=N] iova=X len=N read|write expect …`
    Dma {
        /// Requesting device.
        dev: DevRef,
        /// PASID, if any.
        pasid: Option<Expr>,
        /// IOVA.
        iova: Expr,
        /// Bytes.
        len: Expr,
        /// Write (else read).
        write: bool,
        /// Expected result.
        expect: DmaExpect,
    },
    /// `host dev=D key=value…`: attach a simulated host to a device.
    Host {
        /// Device.
        dev: DevRef,
        /// Options.
        opts: Vec<(String, String)>,
    },
    /// `host-remaining dev=D N`: set the host's remaining entries.
    HostRemaining {
        /// Device.
        dev: DevRef,
        /// Entries.
        value: Expr,
    },
    /// `expect-host-count dev=D N`
    ExpectHostCount {
        /// Device.
        dev: DevRef,
        /// Mappings.
        count: Expr,
    },
    /// `expect-host-remaining dev=D N|none`
    ExpectHostRemaining {
        /// Device.
        dev: DevRef,
        /// Entries, `None` for "no limit".
        value: Option<Expr>,
    },
    /// `expect-host-mappings dev=D { IOVA GPA SIZE PERM … }`
    ExpectHostMappings {
        /// Device.
        dev: DevRef,
        /// Exact mapping list.
        list: Vec<(Expr, Expr, Expr, String)>,
    },
    /// `expect-host-calls dev=D { … }`
    ExpectHostCalls {
        /// Device.
        dev: DevRef,
        /// Exact call sequence since the last checkpoint.
        calls: Vec<CallSpec>,
    },
    /// `expect-msi addr=A data=D`
    ExpectMsi {
        /// Address.
        addr: Expr,
        /// Data.
        data: Expr,
    },
    /// `expect-no-msi`
    ExpectNoMsi,
    /// `discard|populate START SIZE`, `convert private|shared START SIZE`,
    /// `expect-conversions START SIZE`: a memory event from the VMM.
    MemoryEvent {
        /// Which event.
        kind: MemoryEventKind,
        /// First guest-physical address.
        start: Expr,
        /// Bytes.
        size: Expr,
        /// `expect-error=KIND`: the model must fail the event with this error.
        expect_error: Option<String>,
    },
    /// `expect-dma-mapped START SIZE N`: exactly N host mappings (all devices) reach the
    /// guest-physical range.
    ExpectDmaMapped {
        /// First guest-physical address.
        start: Expr,
        /// Bytes.
        size: Expr,
        /// Host mappings.
        count: Expr,
    },
    /// `irq request|remap|route|route-set … dev=D addr=A data=V [expect OUTCOME]`
    Irq {
        /// Which call.
        call: IrqCall,
        /// Source id.
        dev: DevRef,
        /// MSI address.
        addr: Expr,
        /// MSI data.
        data: Expr,
        /// Expected outcome (mandatory for `request`, `remap` and `route`).
        expect: Option<IrqExpect>,
    },
    /// `expect-irq-route id=N OUTCOME`: the current resolution of route N of the scenario's
    /// route table.
    ExpectIrqRoute {
        /// Route id.
        id: Expr,
        /// Expected resolution.
        expect: IrqExpect,
    },
    /// `expect-irq-invalidation …` (`Some`) / `expect-no-irq-invalidation` (`None`)
    ExpectIrqInvalidation(Option<IrqInvalidationSpec>),
    /// `expect-route-updates { … }`
    ExpectRouteUpdates(Vec<RouteUpdateSpec>),
    /// `checkpoint NAME`
    Checkpoint {
        /// Name (for messages).
        name: String,
    },
    /// `snapshot NAME`: the model's snapshot stream and a copy of guest memory.
    Snapshot {
        /// Name to restore it by.
        name: String,
    },
    /// `restore NAME [attach=after|before] [limit=N] [truncate=N] [expect-error=KIND]`:
    /// a fresh model, guest memory and hosts, restored from snapshot NAME.
    Restore {
        /// The snapshot.
        name: String,
        /// Attach the fresh hosts before the restore instead of after.
        attach_before: bool,
        /// Entry limit of every fresh host (default: each host's own).
        limit: Option<Expr>,
        /// Keep only the first N bytes of the stream (a corrupt stream).
        truncate: Option<Expr>,
        /// The restore (or an attach) must fail with this error kind.
        expect_error: Option<String>,
    },
    /// `repeat N [as VAR] { … }`
    Repeat {
        /// Iterations.
        count: Expr,
        /// Loop variable (0-based).
        var: Option<String>,
        /// Body.
        body: Vec<Stmt>,
    },
    /// An intercepted instruction (s390): `NAME key=value… expect key=value…`
    Instruction {
        /// Instruction (`clp`, `rpcit`, …).
        name: String,
        /// Operands.
        args: Vec<(String, Expr)>,
        /// Expected outcome fields (`cc`, `status`, `value`, …).
        expect: Vec<(String, Expr)>,
    },
}

/// An operation and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stmt {
    /// 1-based line number.
    pub line: usize,
    /// The operation.
    pub op: Op,
}
