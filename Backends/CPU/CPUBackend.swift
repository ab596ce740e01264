import Foundation
import LoRAFuse

/// Memory the CPU backend allocated for one node's value. Large values come from
/// `CPUMemoryPool` (mapped regions, reused across nodes and passes): through malloc, each
/// worker thread's arena would keep the pages of freed activations, and peak RSS would
/// grow with the thread count instead of following the live set.
final class CPUAllocation: @unchecked Sendable {
    static let mapThreshold = 1 << 20

    let pointer: UnsafeMutableRawPointer
    let byteCount: Int
    private let region: CPUMemoryPool.Region?
    private let pool: CPUMemoryPool

    init(byteCount: Int, pool: CPUMemoryPool) {
        self.byteCount = byteCount
        self.pool = pool
        if byteCount >= Self.mapThreshold, let region = pool.acquire(byteCount) {
            pointer = region.pointer
            self.region = region
        } else {
            pointer = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
            region = nil
        }
    }

    deinit {
        if let region { pool.release(region) } else { pointer.deallocate() }
    }
}

/// A node's value during execution: typed bytes and whatever keeps them alive.
struct CPUValue {
    let type: TensorType
    let base: UnsafeRawPointer
    let owner: AnyObject

    init(_ tensor: HostTensor) {
        type = tensor.type
        base = tensor.storage.baseAddress + tensor.byteOffset
        owner = tensor.storage
    }

    init(type: TensorType, allocation: CPUAllocation) {
        self.type = type
        self.base = UnsafeRawPointer(allocation.pointer)
        self.owner = allocation
    }

    var floats: UnsafePointer<Float> { base.assumingMemoryBound(to: Float.self) }

    var hostTensor: HostTensor {
        HostTensor(type: type, storage: TensorStorage(borrowing: base, byteCount: type.byteCount, owner: owner))
    }
}

/// A host tensor held by the CPU backend (upload/download are reference moves).
final class CPUBuffer: BackendBuffer, @unchecked Sendable {
    let tensor: HostTensor
    var type: TensorType { tensor.type }
    init(_ tensor: HostTensor) { self.tensor = tensor }
}

/// The reference backend: every op, float32 arithmetic and accumulation, multithreaded
/// with Dispatch; large float32 matmuls optionally go to OpenBLAS.
public final class CPUBackend: Backend, @unchecked Sendable {
    public struct Configuration: Sendable, Hashable {
        public var threadCount: Int
        /// Hand float32 matmuls to OpenBLAS when it is installed.
        public var useBLAS: Bool
        /// Use the AVX-512 micro-kernel when the CPU has it (else the AVX2 one).
        public var useAVX512: Bool
        /// Keep freed activation regions mapped for the next values of the same size
        /// (`CPUMemoryPool`); off, every large value is mapped and unmapped on its own.
        public var reuseMemory: Bool

        public init(threadCount: Int = ProcessInfo.processInfo.activeProcessorCount, useBLAS: Bool = true, useAVX512: Bool = true,
                    reuseMemory: Bool = true) {
            self.threadCount = max(1, threadCount)
            self.useBLAS = useBLAS
            self.useAVX512 = useAVX512
            self.reuseMemory = reuseMemory
        }

        /// Defaults, overridden by `LORAFUSE_CPU_THREADS`, `LORAFUSE_CPU_BLAS=0`,
        /// `LORAFUSE_CPU_AVX512=0` and `LORAFUSE_CPU_POOL=0` (the README's tuning table);
        /// the only place the CPU backend reads the environment.
        public static var fromEnvironment: Configuration {
            var configuration = Configuration()
            if let threads = TuningEnvironment.integer("LORAFUSE_CPU_THREADS", in: 1...4096) { configuration.threadCount = threads }
            if TuningEnvironment.flag("LORAFUSE_CPU_BLAS") == false { configuration.useBLAS = false }
            if TuningEnvironment.flag("LORAFUSE_CPU_AVX512") == false { configuration.useAVX512 = false }
            if TuningEnvironment.flag("LORAFUSE_CPU_POOL") == false { configuration.reuseMemory = false }
            return configuration
        }
    }

    public let name = "cpu"
    public let configuration: Configuration
    public let device: DeviceInfo
    public let capabilities = BackendCapabilities(ops: Set(OpKind.allCases), weightTypes: DType.linearWeightTypes)
    let blas: OpenBLAS?
    let kernel: GemmKernel
    let pool: CPUMemoryPool

    public init(configuration: Configuration = .fromEnvironment) {
        self.configuration = configuration
        self.pool = configuration.reuseMemory ? .shared : .unpooled
        self.blas = configuration.useBLAS ? OpenBLAS.shared : nil
        self.kernel = configuration.useAVX512 ? .preferred : .avx2
        self.device = CPUBackendPlugin.deviceInfo(configuration: configuration)
        blas?.setThreadCount(configuration.threadCount)
    }

    /// Whether float32 matmuls go to OpenBLAS.
    public var usesBLAS: Bool { blas != nil }

    /// The built-in GEMM micro-kernel in use: "avx512" (14×32) or "avx2" (6×16).
    public var kernelName: String { kernel.instructions.rawValue }

    public func upload(_ tensor: HostTensor) throws -> any BackendBuffer { CPUBuffer(tensor) }

    private let residency = NSLock()
    private var residentBytes = 0

    /// The CPU backend reads weights where they are (views of the memory-mapped files):
    /// nothing is copied or allocated; the bytes are counted so `memory()` can report them.
    public func makeResident(_ parts: [(set: WeightSet, handles: [WeightHandle])],
                             progress: (@Sendable (Int, Int) -> Void)?) throws -> ResidentWeights {
        let handles = parts.flatMap(\.handles)
        let bytes = parts.reduce(0) { total, part in total + part.handles.reduce(0) { $0 + part.set.tensor($1).byteCount } }
        residency.withLock { residentBytes += bytes }
        return ResidentWeights(backend: name, sets: parts.map(\.set.name), handles: handles, byteCount: bytes, allocatedBytes: 0) { [weak self] in
            guard let self else { return }
            self.residency.withLock { self.residentBytes -= bytes }
        }
    }

    /// Physical memory, MemAvailable from /proc/meminfo where there is one, and the weights
    /// made resident (read in place, so none allocated).
    public func memory() -> BackendMemory {
        var free: Int?
        if let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
           let line = text.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
           let kib = Int(line.split(separator: " ").dropFirst().first ?? "") {
            free = kib * 1024
        }
        return BackendMemory(total: Int(ProcessInfo.processInfo.physicalMemory), free: free,
                             residentWeightBytes: residency.withLock { residentBytes }, allocatedWeightBytes: 0)
    }

    public func download(_ buffer: any BackendBuffer) throws -> HostTensor {
        guard let buffer = buffer as? CPUBuffer else { throw BackendError.foreignBuffer(backend: name) }
        return buffer.tensor
    }

    public func execute(_ graph: Graph, inputs: [String: HostTensor], options: ExecutionOptions) throws -> ExecutionResult {
        try validate(graph, inputs: inputs)
        var values = [CPUValue?](repeating: nil, count: graph.nodes.count)
        var remainingUses = [Int](repeating: 0, count: graph.nodes.count)
        for node in graph.nodes { for input in node.inputs { remainingUses[input] += 1 } }
        let kept = Set(graph.outputs)
        // Values a LoRA update may overwrite in place: read by that node alone, freshly
        // allocated (not an input, weight or reshape alias), and not returned.
        let useCounts = remainingUses
        let overwritable = { (id: Int) -> Bool in
            guard useCounts[id] == 1, !kept.contains(id), !options.keepIntermediates else { return false }
            switch graph.nodes[id].op {
            case .input, .parameter, .reshape: return false
            default: return true
            }
        }
        let biasFusion = options.keepIntermediates ? BiasFusion() : BiasFusion(graph, useCounts: useCounts, kept: kept)
        var result = ExecutionResult(outputs: [])
        for node in graph.nodes {
            let start = options.recordTimings ? DispatchTime.now().uptimeNanoseconds : 0
            let value: CPUValue
            do {
                value = try evaluate(node, values: values, graph: graph, inputs: inputs, overwritable: overwritable, biasFusion: biasFusion)
            } catch let error as CPUKernelError {
                throw BackendError.deviceFailure(backend: name, reason: "node %\(node.id) \(node.op.summary): \(error.message)")
            }
            values[node.id] = value
            if options.recordTimings {
                result.nodeSeconds[node.id] = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            }
            if options.keepIntermediates { result.intermediates[node.id] = value.hostTensor }
            options.progress?(node.id + 1, graph.nodes.count)
            for input in node.inputs {
                remainingUses[input] -= 1
                if remainingUses[input] == 0 && !kept.contains(input) { values[input] = nil }
            }
        }
        result.outputs = graph.outputs.map { values[$0]!.hostTensor }
        return result
    }

    // MARK: - Evaluation

    private func allocate(_ type: TensorType) -> (CPUValue, UnsafeMutablePointer<Float>) {
        let allocation = CPUAllocation(byteCount: type.byteCount, pool: pool)
        return (CPUValue(type: type, allocation: allocation), allocation.pointer.assumingMemoryBound(to: Float.self))
    }

    private func evaluate(_ node: Node, values: [CPUValue?], graph: Graph, inputs: [String: HostTensor],
                          overwritable: (Int) -> Bool, biasFusion: BiasFusion) throws -> CPUValue {
        let operands = node.inputs.map { values[$0]! }
        let threads = configuration.threadCount
        let type = node.type
        /// The output of an element-wise node: one of the `candidates` operands' own memory
        /// when this node is its last reader (the kernels read each element before writing
        /// the same index), so no fresh buffer is pulled through the caches; else new.
        func output(reusing candidates: [Int]) -> (CPUValue, UnsafeMutablePointer<Float>) {
            if let reused = candidates.first(where: { operands[$0].type == type && overwritable(node.inputs[$0]) }) {
                return (operands[reused], UnsafeMutablePointer(mutating: operands[reused].floats))
            }
            return allocate(type)
        }
        switch node.op {
        case let .input(inputName):
            return CPUValue(inputs[inputName]!)
        case .parameter:
            return CPUValue(graph.weight(node.id))
        case let .matmul(transposeA, transposeB):
            let (value, out) = allocate(type)
            // A Linear's bias: its rows go into C first and the product accumulates on them
            // (BLAS with β = 1 skips its own zeroing pass), and the add node passes C on.
            if let bias = biasFusion.bias[node.id] {
                let width = type.shape.last, rows = type.shape.rowCount, source = values[bias]!.floats
                parallelFor(rows, threads: threads, minimumChunk: 64) { range in
                    for row in range { (out + row * width).update(from: source, count: width) }
                }
            }
            matmul(operands[0], operands[1], transposeA: transposeA, transposeB: transposeB, out: out, outShape: type.shape,
                   accumulate: biasFusion.bias[node.id] != nil)
            return value
        case let .lowRankUpdate(scale):
            let y = operands[0]
            if overwritable(node.inputs[0]) {
                lowRankUpdate(y: y, x: operands[1], down: operands[2], up: operands[3], scale: scale, out: UnsafeMutablePointer(mutating: y.floats))
                return y
            }
            let (value, out) = allocate(type)
            lowRankUpdate(y: y, x: operands[1], down: operands[2], up: operands[3], scale: scale, out: out)
            return value
        case let .topKAbsSum(k):
            let (value, out) = allocate(type)
            let (top, total) = SelectionKernels.topKAbsSum(operands.map { ($0.floats, $0.type.shape.elementCount) }, k: k)
            out[0] = Float(top)
            out[1] = Float(total)
            return value
        case let .lowRankTopKAbsSum(k, scales):
            let (value, out) = allocate(type)
            let parts = scales.enumerated().map { index, scale in
                let up = operands[2 * index], down = operands[2 * index + 1]
                let (rows, rank, columns) = (up.type.shape[0], up.type.shape[1], down.type.shape[1])
                return SelectionKernels.LowRankPart(
                    scaledUp: up.hostTensor.floats().map { $0 * scale },
                    down: MatrixOperand(base: down.base, dtype: down.type.dtype, rowStride: columns, columnStride: 1),
                    rows: rows, rank: rank, columns: columns)
            }
            let (top, total) = SelectionKernels.lowRankTopKAbsSum(parts, k: k, threads: threads)
            out[0] = Float(top)
            out[1] = Float(total)
            return value
        case let .loraGate(epsilon):
            let (value, out) = allocate(type)
            GateKernels.loraGate(base: operands[0].floats, parameters: operands[1].floats, loras: operands[2...].map(\.floats),
                                 out: out, rows: type.shape.rowCount, width: type.shape.last, epsilon: epsilon, threads: threads)
            return value
        case let .lowRankGate(epsilon, ranks):
            let (value, out) = allocate(type)
            GateKernels.lowRankGate(base: operands[0].floats, parameters: operands[1].floats, lowRank: operands[2].floats,
                                    up: operands[3].floats, ranks: ranks, out: out, rows: type.shape.rowCount,
                                    width: type.shape.last, epsilon: epsilon, threads: threads)
            return value
        case let .binary(op):
            if let product = biasFusion.passThrough[node.id] { return values[product]! }
            let (value, out) = output(reusing: [0, 1])
            ElementwiseKernels.binary(op, a: operands[0].floats, aShape: operands[0].type.shape,
                                      b: operands[1].floats, bShape: operands[1].type.shape,
                                      out: out, outShape: type.shape, threads: threads)
            return value
        case let .scale(factor):
            let (value, out) = output(reusing: [0])
            ElementwiseKernels.scale(operands[0].floats, by: factor, out: out, count: type.shape.elementCount, threads: threads)
            return value
        case let .unary(function):
            let (value, out) = output(reusing: [0])
            ElementwiseKernels.unary(function, operands[0].floats, out: out, count: type.shape.elementCount, threads: threads)
            return value
        case .softmax:
            let (value, out) = allocate(type)
            NormalizationKernels.softmax(operands[0].floats, out: out, rows: type.shape.rowCount, width: type.shape.last, threads: threads)
            return value
        case let .layerNorm(epsilon):
            let (value, out) = allocate(type)
            NormalizationKernels.layerNorm(operands[0].floats, weight: operands.count == 3 ? operands[1].floats : nil,
                                           bias: operands.count == 3 ? operands[2].floats : nil, epsilon: epsilon,
                                           out: out, rows: type.shape.rowCount, width: type.shape.last, threads: threads)
            return value
        case let .rmsNorm(epsilon):
            let (value, out) = allocate(type)
            NormalizationKernels.rmsNorm(operands[0].floats, weight: operands.count == 2 ? operands[1].floats : nil,
                                         epsilon: epsilon, out: out, rows: type.shape.rowCount, width: type.shape.last, threads: threads)
            return value
        case .rotaryEmbedding:
            let (value, out) = allocate(type)
            let shape = type.shape
            AttentionKernels.rotaryEmbedding(operands[0].floats, cos: operands[1].floats, sin: operands[2].floats, out: out,
                                             batch: shape[0], length: shape[1], heads: shape[2], headDim: shape[3], threads: threads)
            return value
        case let .attention(scale, causal):
            let (value, out) = allocate(type)
            let q = operands[0].type.shape, k = operands[1].type.shape
            AttentionKernels.attention(q: operands[0].floats, k: operands[1].floats, v: operands[2].floats,
                                       mask: operands.count == 4 ? operands[3].floats : nil,
                                       maskShape: operands.count == 4 ? operands[3].type.shape : nil, out: out,
                                       batch: q[0], queryLength: q[1], keyLength: k[1], heads: q[2], headDim: q[3],
                                       scale: scale, causal: causal, threads: threads, blas: blas, kernel: kernel, pool: pool)
            return value
        case let .conv2d(padding):
            let (value, out) = allocate(type)
            conv2d(x: operands[0], weight: operands[1], bias: operands.count == 3 ? operands[2] : nil, padding: padding,
                   out: out, outShape: type.shape)
            return value
        case .reshape:
            return CPUValue(operands[0].hostTensor.reshaped(type.shape))
        case let .permute(order):
            let allocation = CPUAllocation(byteCount: type.byteCount, pool: pool)
            LayoutKernels.permute(operands[0].base, shape: operands[0].type.shape, order: order,
                                  elementSize: type.dtype.byteSize, out: allocation.pointer, threads: threads)
            return CPUValue(type: type, allocation: allocation)
        case let .slice(axis, start, end):
            let allocation = CPUAllocation(byteCount: type.byteCount, pool: pool)
            LayoutKernels.slice(operands[0].base, shape: operands[0].type.shape, axis: axis, start: start, end: end,
                                elementSize: type.dtype.byteSize, out: allocation.pointer, threads: threads)
            return CPUValue(type: type, allocation: allocation)
        case let .concat(axis):
            let allocation = CPUAllocation(byteCount: type.byteCount, pool: pool)
            LayoutKernels.concat(operands.map { ($0.base, $0.type.shape[axis]) }, outShape: type.shape, axis: axis,
                                 elementSize: type.dtype.byteSize, out: allocation.pointer, threads: threads)
            return CPUValue(type: type, allocation: allocation)
        case .embedding:
            let (value, out) = allocate(type)
            let table = operands[0]
            let width = table.type.shape[1]
            try LayoutKernels.embedding(
                table: MatrixOperand(base: table.base, dtype: table.type.dtype, rowStride: width, columnStride: 1),
                vocabulary: table.type.shape[0], width: width, ids: operands[1].base, idType: operands[1].type.dtype,
                count: operands[1].type.shape.elementCount, out: out)
            return value
        case let .cast(target):
            let source = operands[0]
            let count = type.shape.elementCount
            let allocation = CPUAllocation(byteCount: type.byteCount, pool: pool)
            if target == .float32 {
                ElementConversion.convertToFloat(source.base, dtype: source.type.dtype, count: count,
                                                 into: allocation.pointer.assumingMemoryBound(to: Float.self))
            } else {
                let widened = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
                defer { widened.deallocate() }
                ElementConversion.convertToFloat(source.base, dtype: source.type.dtype, count: count, into: widened)
                ElementConversion.convertFromFloat(widened, count: count, to: target, into: allocation.pointer)
            }
            return CPUValue(type: type, allocation: allocation)
        }
    }

    /// Convolution as GEMMs: out[O, pixels] = W[O, C·kh·kw] · columns[C·kh·kw, pixels], the
    /// columns gathered (im2col) for a block of output rows at a time so they stay under
    /// 32 MB; a 1×1 convolution without padding reads x directly.
    private func conv2d(x: CPUValue, weight: CPUValue, bias: CPUValue?, padding: Int, out: UnsafeMutablePointer<Float>, outShape: Shape) {
        let (batch, channels, height, width) = (x.type.shape[0], x.type.shape[1], x.type.shape[2], x.type.shape[3])
        let (outputs, kh, kw) = (weight.type.shape[0], weight.type.shape[2], weight.type.shape[3])
        let (outHeight, outWidth) = (outShape[2], outShape[3])
        let depth = channels * kh * kw, pixels = outHeight * outWidth
        let threads = configuration.threadCount
        let weights = MatrixOperand(base: weight.base, dtype: weight.type.dtype, rowStride: depth, columnStride: 1)
        func gemm(n: Int, columns: MatrixOperand, c: UnsafeMutablePointer<Float>) {
            if let blas, blas.multiply(m: outputs, n: n, k: depth, a: weights, b: columns, c: c, ldc: pixels, accumulate: false) { return }
            Gemm.multiply(m: outputs, n: n, k: depth, a: weights, b: columns, c: c, ldc: pixels, accumulate: false, threads: threads, kernel: kernel)
        }
        let direct = kh == 1 && kw == 1 && padding == 0
        let rowsPerBlock = max(1, min(outHeight, (8 << 20) / max(1, depth * outWidth)))
        let scratch = direct ? nil : UnsafeMutablePointer<Float>.allocate(capacity: depth * rowsPerBlock * outWidth)
        defer { scratch?.deallocate() }
        let input = x.floats
        for b in 0..<batch {
            let image = input + b * channels * height * width
            let result = out + b * outputs * pixels
            if direct {
                gemm(n: pixels, columns: MatrixOperand(base: UnsafeRawPointer(image), dtype: .float32, rowStride: pixels, columnStride: 1), c: result)
            } else {
                for firstRow in stride(from: 0, to: outHeight, by: rowsPerBlock) {
                    let rows = min(rowsPerBlock, outHeight - firstRow), n = rows * outWidth
                    let columns = scratch!
                    parallelFor(depth, threads: threads) { range in
                        for row in range {
                            let c = row / (kh * kw), ky = (row / kw) % kh, kx = row % kw
                            let line = columns + row * n
                            for oy in 0..<rows {
                                let iy = firstRow + oy + ky - padding
                                let target = line + oy * outWidth
                                guard iy >= 0, iy < height else { target.update(repeating: 0, count: outWidth); continue }
                                let source = image + (c * height + iy) * width
                                for ox in 0..<outWidth {
                                    let ix = ox + kx - padding
                                    target[ox] = ix >= 0 && ix < width ? source[ix] : 0
                                }
                            }
                        }
                    }
                    gemm(n: n, columns: MatrixOperand(base: UnsafeRawPointer(columns), dtype: .float32, rowStride: n, columnStride: 1),
                         c: result + firstRow * outWidth)
                }
            }
            if let bias {
                for o in 0..<outputs {
                    let value = bias.floats[o]
                    let line = result + o * pixels
                    for index in 0..<pixels { line[index] += value }
                }
            }
        }
    }

    /// `out = y + scale·(x·downᵀ)·upᵀ`: the rank-r rows are computed once into a small
    /// buffer, scaled, and the up-projection accumulates straight onto a copy of `y`.
    private func lowRankUpdate(y: CPUValue, x: CPUValue, down: CPUValue, up: CPUValue, scale: Float, out: UnsafeMutablePointer<Float>) {
        let rows = y.type.shape.rowCount, n = y.type.shape.last, k = x.type.shape.last, rank = down.type.shape[0]
        let threads = configuration.threadCount
        let low = UnsafeMutablePointer<Float>.allocate(capacity: max(rows * rank, 1))
        defer { low.deallocate() }
        // b(p, j) = down[j, p] and up[j, p]: the factors are read transposed through strides.
        let xOperand = MatrixOperand(base: x.base, dtype: .float32, rowStride: k, columnStride: 1)
        let downOperand = MatrixOperand(base: down.base, dtype: down.type.dtype, rowStride: 1, columnStride: k)
        let lowOperand = MatrixOperand(base: UnsafeRawPointer(low), dtype: .float32, rowStride: rank, columnStride: 1)
        let upOperand = MatrixOperand(base: up.base, dtype: up.type.dtype, rowStride: 1, columnStride: rank)
        func gemm(m: Int, n: Int, k: Int, a: MatrixOperand, b: MatrixOperand, c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool) {
            if let blas, blas.multiply(m: m, n: n, k: k, a: a, b: b, c: c, ldc: ldc, accumulate: accumulate) { return }
            Gemm.multiply(m: m, n: n, k: k, a: a, b: b, c: c, ldc: ldc, accumulate: accumulate, threads: threads, kernel: kernel)
        }
        gemm(m: rows, n: rank, k: k, a: xOperand, b: downOperand, c: low, ldc: rank, accumulate: false)
        ElementwiseKernels.scale(low, by: scale, out: low, count: rows * rank, threads: 1)
        if UnsafePointer(out) != y.floats { out.update(from: y.floats, count: rows * n) }
        gemm(m: rows, n: n, k: rank, a: lowOperand, b: upOperand, c: out, ldc: n, accumulate: true)
    }

    /// Batched matmul with numpy-broadcast batch axes.
    private func matmul(_ a: CPUValue, _ b: CPUValue, transposeA: Bool, transposeB: Bool,
                        out: UnsafeMutablePointer<Float>, outShape: Shape, accumulate: Bool = false) {
        let layout = MatmulLayout(a: a.type.shape, b: b.type.shape, transposeA: transposeA, transposeB: transposeB, output: outShape)
        let (m, n, k) = (layout.m, layout.n, layout.k)
        let batchCount = layout.batchCount

        func operands(_ batchIndex: Int) -> (MatrixOperand, MatrixOperand, UnsafeMutablePointer<Float>) {
            let (aOffset, bOffset) = layout.offsets(batch: batchIndex)
            let aOperand = MatrixOperand(base: a.base + aOffset * 4, dtype: .float32,
                                         rowStride: layout.aRowStride, columnStride: layout.aColumnStride)
            let bOperand = MatrixOperand(base: b.base + b.type.dtype.byteCount(elements: bOffset), dtype: b.type.dtype,
                                         rowStride: layout.bRowStride, columnStride: layout.bColumnStride)
            return (aOperand, bOperand, out + batchIndex * m * n)
        }

        let threads = configuration.threadCount
        if batchCount > 1 && m * n * k < (1 << 21) {
            // Many small products (attention heads, LoRA factors): one per core.
            parallelFor(batchCount, threads: threads) { range in
                for batchIndex in range {
                    let (aOperand, bOperand, c) = operands(batchIndex)
                    Gemm.multiply(m: m, n: n, k: k, a: aOperand, b: bOperand, c: c, ldc: n, accumulate: accumulate, threads: 1, kernel: kernel)
                }
            }
            return
        }
        for batchIndex in 0..<batchCount {
            let (aOperand, bOperand, c) = operands(batchIndex)
            if let blas, m * n * k >= 32 * 32 * 32,
               blas.multiply(m: m, n: n, k: k, a: aOperand, b: bOperand, c: c, ldc: n, accumulate: accumulate) {
                continue
            }
            Gemm.multiply(m: m, n: n, k: k, a: aOperand, b: bOperand, c: c, ldc: n, accumulate: accumulate, threads: threads, kernel: kernel)
        }
    }
}

/// Linears whose bias add the matmul absorbs: `add(matmul, bias)` where the product has no
/// other reader and is not an output, and the bias is a float32 vector of the output width
/// computed earlier in the graph.
struct BiasFusion {
    /// matmul node → the bias node whose rows it starts from.
    var bias: [Int: Int] = [:]
    /// add node → the matmul node whose value it returns unchanged.
    var passThrough: [Int: Int] = [:]

    init() {}

    init(_ graph: Graph, useCounts: [Int], kept: Set<Int>) {
        for node in graph.nodes {
            guard case .binary(.add) = node.op, node.inputs.count == 2 else { continue }
            for (productIndex, biasIndex) in [(0, 1), (1, 0)] {
                let product = node.inputs[productIndex], vector = node.inputs[biasIndex]
                let productNode = graph.nodes[product], vectorType = graph.nodes[vector].type
                guard case .matmul = productNode.op, bias[product] == nil, useCounts[product] == 1, !kept.contains(product),
                      product != vector, vector < product, productNode.type == node.type, productNode.type.dtype == .float32,
                      vectorType.dtype == .float32, vectorType.shape.rank == 1, vectorType.shape[0] == node.type.shape.last
                else { continue }
                bias[product] = vector
                passThrough[node.id] = product
                break
            }
        }
    }
}
