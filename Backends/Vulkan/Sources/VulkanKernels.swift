// Built only where the Vulkan headers are installed; see VulkanBackendPlugin.swift.
#if canImport(CVulkan)
import CVulkan
import Foundation
import LoRAFuse

/// Maps each graph op to its shader, push constants and workgroup grid.
struct VulkanKernels {
    let device: VulkanDevice
    let recorder: VulkanCommandRecorder
    let matmulVariant: VulkanBackend.MatmulVariant

    let configuration: VulkanBackend.Configuration

    /// Rows × columns of outputs per invocation of the vec4 and texel matmuls for `m` rows
    /// of A (`Configuration.vec4Block` overrides). Defaults measured on lavapipe with
    /// `lorafuse profile matmul` (the measurements are in docs/tuning-log.md): 12×12 for
    /// storage-buffer loads; with texel fetches 32×16 from 1024 rows, 16×16 above 8 rows,
    /// 4×16 for 1–8 rows (every invocation computes all its rows, so a tall block wastes work).
    func vec4Block(texel: Bool, rows m: Int) -> (rows: Int, columns: Int) {
        if let block = configuration.vec4Block { return (block.rows, block.columns) }
        guard texel else { return (configuration.registerBlock, configuration.registerBlock) }
        return (m >= 1024 ? 32 : m > 8 ? 16 : 4, 16)
    }

    /// Dtype codes of common.glsl.
    static func code(_ dtype: DType) -> UInt32 {
        switch dtype {
        case .float16: 1
        case .bfloat16: 2
        case .int32: 3
        case .int64: 4
        case .float8E4M3: 5
        case .float8E5M2: 6
        default: 0
        }
    }

    /// Pads `dimensions`/`strides` at the front to rank 6 (extent 1, stride 0).
    static func rank6(_ values: [Int], fill: Int) -> [UInt32] {
        ([Int](repeating: fill, count: 6 - values.count) + values).map { UInt32($0) }
    }

    func record(_ node: Node, operands: [(VulkanRange, TensorType)], output: VulkanRange) throws {
        let type = node.type
        let count = type.shape.elementCount
        switch node.op {
        case .input, .parameter, .reshape:
            return
        case let .matmul(transposeA, transposeB):
            try matmul(operands[0], operands[1], transposeA: transposeA, transposeB: transposeB, output: output, outShape: type.shape)
        case let .lowRankUpdate(scale):
            try lowRankUpdate(operands, output: output, shape: type.shape, scale: scale)
        case let .topKAbsSum(k):
            try topKAbsSum(operands, output: output, k: k)
        case let .lowRankTopKAbsSum(k, scales):
            try lowRankTopKAbsSum(operands, output: output, k: k, scales: scales)
        case let .loraGate(epsilon):
            // Unused LoRA bindings repeat the first one.
            let loras = operands[2...].map(\.0)
            let bindings = [operands[0].0, operands[1].0] + (0..<Graph.maximumGateInputs).map { $0 < loras.count ? loras[loras.startIndex + $0] : loras.first! }
            try recorder.dispatch(device.pipeline("lora_gate", bindings: 11), bindings + [output],
                                  constants: [UInt32(type.shape.rowCount), UInt32(type.shape.last), UInt32(loras.count), epsilon.bitPattern],
                                  groups: VulkanCommandRecorder.groups1D(type.shape.rowCount, localSize: 1))
        case let .lowRankGate(epsilon, ranks):
            var offsets = [UInt32(0)]
            for rank in ranks { offsets.append(offsets.last! + UInt32(rank)) }
            offsets += Array(repeating: offsets.last!, count: Graph.maximumGateInputs + 1 - offsets.count)
            try recorder.dispatch(device.pipeline("lora_gate_lowrank", bindings: 5), operands[0...3].map(\.0) + [output],
                                  constants: [UInt32(type.shape.rowCount), UInt32(type.shape.last), UInt32(ranks.count), epsilon.bitPattern,
                                              offsets.last!] + offsets,
                                  groups: VulkanCommandRecorder.groups1D(type.shape.rowCount, localSize: 1))
        case let .binary(op):
            let codes: [BinaryOperator: UInt32] = [.add: 0, .sub: 1, .mul: 2, .div: 3]
            let constants = [UInt32(count), codes[op]!] + Self.rank6(type.shape.dimensions, fill: 1)
                + Self.rank6(operands[0].1.shape.broadcastStrides(to: type.shape), fill: 0)
                + Self.rank6(operands[1].1.shape.broadcastStrides(to: type.shape), fill: 0)
            try recorder.dispatch(device.pipeline("binary", bindings: 3), [operands[0].0, operands[1].0, output],
                                  constants: constants, groups: VulkanCommandRecorder.groups1D(count, localSize: 256))
        case let .scale(factor):
            try unary(7, factor: factor, operands[0].0, output, count)
        case let .unary(function):
            let codes: [UnaryFunction: UInt32] = [.gelu: 0, .geluTanh: 1, .quickGelu: 2, .silu: 3, .sigmoid: 4, .relu: 5, .tanh: 6]
            try unary(codes[function]!, factor: 1, operands[0].0, output, count)
        case .softmax:
            try rowwise(mode: 0, operands, output, type.shape, epsilon: 0)
        case let .layerNorm(epsilon):
            try rowwise(mode: 1, operands, output, type.shape, epsilon: epsilon)
        case let .rmsNorm(epsilon):
            try rowwise(mode: 2, operands, output, type.shape, epsilon: epsilon)
        case .rotaryEmbedding:
            let shape = type.shape
            let pairs = count / 2
            try recorder.dispatch(device.pipeline("rope", bindings: 4), [operands[0].0, operands[1].0, operands[2].0, output],
                                  constants: [UInt32(pairs), UInt32(shape[1]), UInt32(shape[2]), UInt32(shape[3] / 2)],
                                  groups: VulkanCommandRecorder.groups1D(pairs, localSize: 256))
        case let .attention(scale, causal):
            try attention(operands, output: output, scale: scale, causal: causal)
        case let .conv2d(padding):
            let (x, weight) = (operands[0], operands[1])
            let shape = type.shape, pixels = shape[2] * shape[3]
            let block = Self.convolutionBlock
            let pipeline = try device.pipeline("conv2d_\(Self.suffix(weight.1.dtype))", bindings: 4,
                                               specialization: [UInt32(block.channels), UInt32(block.pixels)])
            let constants = [x.1.shape[1], x.1.shape[2], x.1.shape[3], shape[1], shape[2], shape[3],
                             weight.1.shape[2], weight.1.shape[3], padding, operands.count == 3 ? 1 : 0].map { UInt32($0) }
            try recorder.dispatch(pipeline, [x.0, weight.0, operands.count == 3 ? operands[2].0 : x.0, output], constants: constants,
                                  groups: ((pixels + 8 * block.pixels - 1) / (8 * block.pixels),
                                           (shape[1] + 8 * block.channels - 1) / (8 * block.channels), shape[0]))
        case let .permute(order):
            let input = operands[0].1.shape
            let strides = input.strides
            try copy(operands[0].0, output, dims: type.shape.dimensions, inStrides: order.map { strides[$0] },
                     outStrides: type.shape.strides, inOffset: 0, outOffset: 0)
        case let .slice(axis, start, _):
            let strides = operands[0].1.shape.strides
            try copy(operands[0].0, output, dims: type.shape.dimensions, inStrides: strides, outStrides: type.shape.strides,
                     inOffset: start * strides[axis], outOffset: 0)
        case let .concat(axis):
            let outStrides = type.shape.strides
            var offset = 0
            for (range, partType) in operands {
                try copy(range, output, dims: partType.shape.dimensions, inStrides: partType.shape.strides, outStrides: outStrides,
                         inOffset: 0, outOffset: offset * outStrides[axis])
                offset += partType.shape[axis]
            }
        case .embedding:
            let table = operands[0], ids = operands[1]
            let (rows, width, size) = (table.1.shape[0], table.1.shape[1], table.1.dtype.byteSize)
            // A table past the binding limit (CLIP-L's F32 embeddings, T5-XXL's) is bound one
            // window of rows at a time; each pass writes the ids that fall in its window.
            var rowsPerWindow = rows
            if table.0.size > device.bindingLimit {
                rowsPerWindow = (device.bindingLimit - device.windowAlignment - 4) / max(1, width * size)
                guard rowsPerWindow >= 1 else {
                    throw BackendError.outOfMemory(backend: "vulkan", bytes: width * size, reason: "one embedding row is past maxStorageBufferRange")
                }
            }
            for start in stride(from: 0, to: rows, by: rowsPerWindow) {
                let windowRows = min(rowsPerWindow, rows - start)
                let (window, offset) = rowsPerWindow == rows
                    ? (table.0, 0) : self.window(table.0, start: start * width, count: windowRows * width, size: size)
                try recorder.dispatch(device.pipeline("convert", bindings: 3), [window, ids.0, output],
                                      constants: [UInt32(count), 0, Self.code(table.1.dtype), Self.code(ids.1.dtype), UInt32(width), 0,
                                                  UInt32(start), UInt32(windowRows), UInt32(offset)],
                                      groups: VulkanCommandRecorder.groups1D(count, localSize: 256))
            }
        case let .cast(target):
            let source = operands[0]
            if target == .float32 {
                try widen(source.0, source.1.dtype, output, count)
            } else {
                let words = (count + 1) / 2
                try recorder.dispatch(device.pipeline("convert", bindings: 3), [source.0, source.0, output],
                                      constants: [UInt32(words), target == .float16 ? 2 : 3, Self.code(source.1.dtype), 0, 1, UInt32(count), 0, 0, 0],
                                      groups: VulkanCommandRecorder.groups1D(words, localSize: 256))
            }
        }
    }

    /// `count` elements of `dtype` at `input` converted to float32 at `output`.
    private func widen(_ input: VulkanRange, _ dtype: DType, _ output: VulkanRange, _ count: Int) throws {
        try recorder.dispatch(device.pipeline("convert", bindings: 3), [input, input, output],
                              constants: [UInt32(count), 1, Self.code(dtype), 0, 1, UInt32(count), 0, 0, 0],
                              groups: VulkanCommandRecorder.groups1D(count, localSize: 256))
    }

    private func unary(_ function: UInt32, factor: Float, _ input: VulkanRange, _ output: VulkanRange, _ count: Int) throws {
        try recorder.dispatch(device.pipeline("unary", bindings: 2), [input, output],
                              constants: [UInt32(count), function, factor.bitPattern],
                              groups: VulkanCommandRecorder.groups1D(count, localSize: 256))
    }

    private func rowwise(mode: UInt32, _ operands: [(VulkanRange, TensorType)], _ output: VulkanRange, _ shape: Shape, epsilon: Float) throws {
        let input = operands[0].0
        let weight = operands.count > 1 ? operands[1].0 : input
        let bias = operands.count > 2 ? operands[2].0 : input
        let rows = shape.rowCount
        try recorder.dispatch(device.pipeline("rowwise", bindings: 4), [input, weight, bias, output],
                              constants: [UInt32(rows), UInt32(shape.last), mode, operands.count > 1 ? 1 : 0, epsilon.bitPattern],
                              groups: VulkanCommandRecorder.groups1D(rows, localSize: 1))
    }

    private func copy(_ input: VulkanRange, _ output: VulkanRange, dims: [Int], inStrides: [Int], outStrides: [Int],
                      inOffset: Int, outOffset: Int) throws {
        let count = dims.reduce(1, *)
        guard count > 0 else { return }
        let constants = [UInt32(count), UInt32(inOffset), UInt32(outOffset)] + Self.rank6(dims, fill: 1)
            + Self.rank6(inStrides, fill: 0) + Self.rank6(outStrides, fill: 0)
        try recorder.dispatch(device.pipeline("copy", bindings: 2), [input, output], constants: constants,
                              groups: VulkanCommandRecorder.groups1D(count, localSize: 256))
    }

    private func attention(_ operands: [(VulkanRange, TensorType)], output: VulkanRange, scale: Float, causal: Bool) throws {
        let q = operands[0].1.shape, k = operands[1].1.shape
        let (batch, queryLength, heads, headDim) = (q[0], q[1], q[2], q[3])
        let keyLength = k[1]
        var maskBatchStride = 0, maskHeadStride = 0
        let mask = operands.count == 4 ? operands[3] : nil
        if let maskShape = mask?.1.shape, maskShape.rank == 4 {
            maskBatchStride = maskShape[0] == 1 ? 0 : maskShape[1] * queryLength * keyLength
            maskHeadStride = maskShape[1] == 1 ? 0 : queryLength * keyLength
        }
        // CPU devices: the register variant (no shared memory, 8 queries per invocation), with
        // keys and values read through texel buffers where their views allow it;
        // GPUs: flash attention with key/value tiles in shared memory.
        let registers = matmulVariant != .tiled && headDim % 4 == 0
        let texel = registers && matmulVariant == .texel
        let queries = texel ? configuration.attentionQueries : 8  // per invocation
        let queriesPerGroup = registers ? 64 * queries : 64
        let blocks = (queryLength + queriesPerGroup - 1) / queriesPerGroup
        var constants: [UInt32] = [UInt32(queryLength), UInt32(keyLength), UInt32(heads), scale.bitPattern, causal ? 1 : 0,
                                   mask == nil ? 0 : 1, UInt32(maskBatchStride), UInt32(maskHeadStride), UInt32(blocks)]
        var buffers = [operands[0].0, operands[1].0, operands[2].0, mask?.0 ?? operands[0].0, output]
        let groups = VulkanCommandRecorder.groups1D(batch * heads * blocks, localSize: 1)
        if texel,
           let (keys, keyOffset) = texelWindow(operands[1].0, elementOffset: 0, elementSize: 4),
           let (values, valueOffset) = texelWindow(operands[2].0, elementOffset: 0, elementSize: 4) {
            constants += [UInt32(keyOffset / 4), UInt32(valueOffset / 4)]
            buffers[1] = keys
            buffers[2] = values
            let pipeline = try device.pipeline("attention_texel", bindings: 5, specialization: [UInt32(headDim), UInt32(queries)],
                                               texelBindings: [1, 2])
            try recorder.dispatch(pipeline, buffers, constants: constants, groups: groups,
                                  texelFormats: [1: VK_FORMAT_R32G32B32A32_SFLOAT, 2: VK_FORMAT_R32G32B32A32_SFLOAT])
            return
        }
        try recorder.dispatch(device.pipeline(registers ? "attention_registers" : "attention", bindings: 5,
                                              specialization: registers ? [UInt32(headDim), UInt32(queries)] : [UInt32(headDim)]),
                              buffers, constants: constants, groups: groups)
    }

    /// One matmul dispatch: sizes, strides, the three bound windows and the element
    /// offsets of the operands inside them.
    struct MatmulDispatch {
        var m: Int, n: Int, k: Int
        var aRow: Int, aColumn: Int, bRow: Int, bColumn: Int
        var batch: [Int] = [1, 1, 1]
        var aBatch: [Int] = [0, 0, 0], bBatch: [Int] = [0, 0, 0]
        var aOffset = 0, bOffset = 0, cOffset = 0
        var cRowStride: Int
        var windows: (a: VulkanRange, b: VulkanRange, c: VulkanRange)

        var constants: [UInt32] {
            ([m, n, k, aRow, aColumn, bRow, bColumn, batch[1], batch[2]] + aBatch + bBatch
                + [aOffset, bOffset, cOffset, cRowStride]).map { UInt32($0) }
        }
    }

    func matmul(_ a: (VulkanRange, TensorType), _ b: (VulkanRange, TensorType), transposeA: Bool, transposeB: Bool,
                output: VulkanRange, outShape: Shape) throws {
        let layout = MatmulLayout(a: a.1.shape, b: b.1.shape, transposeA: transposeA, transposeB: transposeB, output: outShape)
        let (m, n, k) = (layout.m, layout.n, layout.k)
        let limit = device.bindingLimit
        var base = MatmulDispatch(m: m, n: n, k: k, aRow: layout.aRowStride, aColumn: layout.aColumnStride,
                                  bRow: layout.bRowStride, bColumn: layout.bColumnStride, cRowStride: n,
                                  windows: (a.0, b.0, output))
        if a.0.size <= limit && b.0.size <= limit && output.size <= limit {
            // The shaders take exactly three batch axes: pad in front (extent 1, stride 0).
            let padding = 3 - layout.batchShape.count
            base.batch = [Int](repeating: 1, count: padding) + layout.batchShape
            base.aBatch = [Int](repeating: 0, count: padding) + layout.aBatchStrides
            base.bBatch = [Int](repeating: 0, count: padding) + layout.bBatchStrides
            try dispatchMatmul(base, weightType: b.1.dtype)
            return
        }
        // Too large to bind whole (past maxStorageBufferRange): one batch matrix at a time,
        // blocks of rows of A and C, blocks of columns of C with the matching rows of Bᵀ,
        // each bound as its own window.
        let budget = limit - device.windowAlignment
        let bSize = b.1.dtype.byteSize
        let aRowMajor = layout.aColumnStride == 1, bTransposed = layout.bRowStride == 1
        var rowsPerChunk = min(m, budget / max(1, n * 4))
        if aRowMajor { rowsPerChunk = min(rowsPerChunk, budget / max(1, k * 4)) }
        let columnsPerChunk = bTransposed ? min(n, budget / max(1, k * bSize)) : n
        guard rowsPerChunk >= 1, columnsPerChunk >= 1, aRowMajor || m * k * 4 <= budget, bTransposed || k * n * bSize <= budget else {
            throw BackendError.outOfMemory(backend: "vulkan", bytes: max(a.0.size, b.0.size, output.size), reason:
                "matmul \(a.1) × \(b.1) cannot be split into windows of this device's maxStorageBufferRange (\(limit) bytes)")
        }
        for batch in 0..<layout.batchCount {
            let (aMatrix, bMatrix) = layout.offsets(batch: batch)
            let cMatrix = batch * m * n
            for row in stride(from: 0, to: m, by: rowsPerChunk) {
                let rows = min(rowsPerChunk, m - row)
                for column in stride(from: 0, to: n, by: columnsPerChunk) {
                    let columns = min(columnsPerChunk, n - column)
                    var chunk = base
                    chunk.m = rows
                    chunk.n = columns
                    let (aWindow, aResidual) = aRowMajor
                        ? window(a.0, start: aMatrix + row * k, count: rows * k, size: 4)
                        : window(a.0, start: aMatrix, count: m * k, size: 4)
                    chunk.aOffset = aResidual + (aRowMajor ? 0 : row)
                    let (bWindow, bResidual) = bTransposed
                        ? window(b.0, start: bMatrix + column * k, count: columns * k, size: bSize)
                        : window(b.0, start: bMatrix, count: k * n, size: bSize)
                    chunk.bOffset = bResidual + (bTransposed ? 0 : column)
                    let (cWindow, cResidual) = window(output, start: cMatrix + row * n + column, count: (rows - 1) * n + columns, size: 4)
                    chunk.cOffset = cResidual
                    chunk.windows = (aWindow, bWindow, cWindow)
                    try dispatchMatmul(chunk, weightType: b.1.dtype)
                }
            }
        }
    }

    /// A binding window over elements `start..<start+count` (of `size` bytes) of `range`,
    /// starting at an aligned offset, and the element offset of `start` inside it.
    func window(_ range: VulkanRange, start: Int, count: Int, size: Int) -> (VulkanRange, Int) {
        let alignment = device.windowAlignment
        let byteStart = range.offset + start * size
        let aligned = byteStart / alignment * alignment
        let end = (byteStart + count * size + 3) & ~3
        return (VulkanRange(buffer: range.buffer, offset: aligned, size: end - aligned), (byteStart - aligned) / size)
    }

    /// The LoRA path `y + scale·(x·downᵀ)·upᵀ` in one kernel per block of rows; tensors past
    /// the binding limit are walked in row chunks, each bound as its own windows.
    private func lowRankUpdate(_ operands: [(VulkanRange, TensorType)], output: VulkanRange, shape: Shape, scale: Float) throws {
        let (y, x, down, up) = (operands[0], operands[1], operands[2], operands[3])
        let rows = shape.rowCount, n = shape.last, k = x.1.shape.last, rank = down.1.shape[0]
        guard rows > 0, n > 0 else { return }
        let rowsPerGroup = min(Self.lowRankMaximumRows, Self.lowRankSharedFloats / rank)
        let rowsPerChunk = max(1, min(rows, (device.bindingLimit - device.windowAlignment) / (max(n, k) * 4)))
        for start in stride(from: 0, to: rows, by: rowsPerChunk) {
            let count = min(rowsPerChunk, rows - start)
            let (xWindow, xOffset) = window(x.0, start: start * k, count: count * k, size: 4)
            // K and the rank in fours, x 16-byte aligned in its window: the 4-wide kernel.
            let wide = k % 4 == 0 && rank % 4 == 0 && xOffset % 4 == 0 && down.0.offset % 16 == 0 && up.0.offset % 16 == 0
            let pipeline = try device.pipeline("lora_update\(wide ? "_vec4" : "")_\(Self.suffix(down.1.dtype))", bindings: 5)
            let (yWindow, yOffset) = window(y.0, start: start * n, count: count * n, size: 4)
            let (outWindow, outOffset) = window(output, start: start * n, count: count * n, size: 4)
            let constants = [count, n, k, rank, rowsPerGroup].map { UInt32($0) } + [scale.bitPattern]
                + [xOffset, yOffset, outOffset].map { UInt32($0) }
            try recorder.dispatch(pipeline, [yWindow, xWindow, down.0, up.0, outWindow], constants: constants,
                                  groups: VulkanCommandRecorder.groups1D((count + rowsPerGroup - 1) / rowsPerGroup, localSize: 1))
        }
    }

    /// Each input cut into windows no larger than the binding limit: (window, element offset, count).
    func elementWindows(_ operands: [(VulkanRange, TensorType)]) -> [(range: VulkanRange, offset: Int, count: Int)] {
        let chunk = Self.windowElements(device)
        var windows: [(range: VulkanRange, offset: Int, count: Int)] = []
        for (range, type) in operands {
            let count = type.shape.elementCount
            for start in stride(from: 0, to: count, by: chunk) {
                let length = min(chunk, count - start)
                let (window, offset) = window(range, start: start, count: length, size: 4)
                windows.append((window, offset, length))
            }
        }
        return windows
    }

    static func windowElements(_ device: VulkanDevice) -> Int {
        max(1, (device.bindingLimit - device.windowAlignment) / 4)
    }

    /// Exact Top-K of |x| by radix select (topk_*.comp): clear, four histogram passes of 8
    /// bits each followed by a one-workgroup pick, a partial-sum pass and a final sum.
    private func topKAbsSum(_ operands: [(VulkanRange, TensorType)], output: VulkanRange, k: Int) throws {
        let windows = elementWindows(operands)
        let groups = windows.map { min(Self.selectionGroups, ($0.count + 255) / 256) }
        let partialCount = groups.reduce(0, +)
        let alignment = device.storageAlignment
        let stateOffset = (1024 + alignment - 1) / alignment * alignment
        let partialOffset = stateOffset + alignment
        let scratch = try VulkanBuffer(device: device, size: partialOffset + max(8 * partialCount, 8), hostVisible: false)
        recorder.retain(scratch)
        let histogram = VulkanRange(buffer: scratch, offset: 0, size: 1024)
        let state = VulkanRange(buffer: scratch, offset: stateOffset, size: 16)
        let partials = VulkanRange(buffer: scratch, offset: partialOffset, size: max(8 * partialCount, 8))
        let control = try device.pipeline("topk_control", bindings: 4)
        func controlStep(mode: UInt32, shift: UInt32 = 0) throws {
            try recorder.dispatch(control, [histogram, state, partials, output], constants: [mode, UInt32(k), shift, UInt32(partialCount)],
                                  groups: (1, 1, 1))
        }
        try controlStep(mode: 0)
        let pass = try device.pipeline("topk_histogram", bindings: 3)
        for shift: UInt32 in [24, 16, 8, 0] {
            for (window, groupCount) in zip(windows, groups) {
                try recorder.dispatch(pass, [window.range, histogram, state], constants: [UInt32(window.count), UInt32(window.offset), shift],
                                      groups: VulkanCommandRecorder.groups1D(groupCount, localSize: 1))
            }
            try controlStep(mode: 1, shift: shift)
        }
        let sum = try device.pipeline("topk_sum", bindings: 3)
        var first = 0
        for (window, groupCount) in zip(windows, groups) {
            try recorder.dispatch(sum, [window.range, state, partials], constants: [UInt32(window.count), UInt32(window.offset), UInt32(first)],
                                  groups: VulkanCommandRecorder.groups1D(groupCount, localSize: 1))
            first += groupCount
        }
        try controlStep(mode: 2)
    }

    /// Top-K of LoRA updates: each ΔW = (scale·up)·down is computed by the matmul kernel
    /// into a scratch buffer that lives only for this op (windowed past the binding limit),
    /// then the radix selection runs over all of them as one set.
    private func lowRankTopKAbsSum(_ operands: [(VulkanRange, TensorType)], output: VulkanRange, k: Int, scales: [Float]) throws {
        let alignment = device.storageAlignment
        func aligned(_ bytes: Int) -> Int { (bytes + alignment - 1) / alignment * alignment }
        var upOffsets: [Int] = [], deltaOffsets: [Int] = []
        var size = 0
        for index in scales.indices {
            let up = operands[2 * index].1.shape, down = operands[2 * index + 1].1.shape
            upOffsets.append(size)
            size += 2 * aligned(up.elementCount * 4)  // widened, then scaled
            deltaOffsets.append(size)
            size += aligned(up[0] * down[1] * 4)
        }
        let scratch = try VulkanBuffer(device: device, size: max(size, 16), hostVisible: false)
        recorder.retain(scratch)
        var deltas: [(VulkanRange, TensorType)] = []
        for (index, scale) in scales.enumerated() {
            let (upRange, upType) = operands[2 * index], down = operands[2 * index + 1]
            let count = upType.shape.elementCount
            let widened = VulkanRange(buffer: scratch, offset: upOffsets[index], size: count * 4)
            let scaled = VulkanRange(buffer: scratch, offset: upOffsets[index] + aligned(count * 4), size: count * 4)
            var source = upRange
            if upType.dtype != .float32 {
                try widen(upRange, upType.dtype, widened, count)
                source = widened
            }
            try unary(7, factor: scale, source, scaled, count)
            let deltaShape = Shape([upType.shape[0], down.1.shape[1]])
            let delta = VulkanRange(buffer: scratch, offset: deltaOffsets[index], size: deltaShape.elementCount * 4)
            try matmul((scaled, TensorType(upType.shape)), down, transposeA: false, transposeB: false, output: delta, outShape: deltaShape)
            deltas.append((delta, TensorType(deltaShape)))
        }
        try topKAbsSum(deltas, output: output, k: k)
    }

    /// Workgroups per window of the selection passes (each invocation strides over the rest).
    static let selectionGroups = 1024

    /// conv2d.comp's register block: output channels × output pixels per invocation.
    static let convolutionBlock = (channels: 4, pixels: 4)

    /// lora_update.comp's limits: rows per workgroup and shared floats for the rank-r block.
    static let lowRankMaximumRows = 16
    static let lowRankSharedFloats = 2048

    static func suffix(_ weightType: DType) -> String {
        switch weightType {
        case .float16: "f16"
        case .bfloat16: "bf16"
        case .float8E4M3: "f8e4m3"
        case .float8E5M2: "f8e5m2"
        default: "f32"
        }
    }

    /// The texel format matmul_texel reads 4 weights of `dtype` as.
    static func texelFormat(_ dtype: DType) -> VkFormat {
        switch dtype {
        case .float16: VK_FORMAT_R16G16B16A16_SFLOAT
        case .bfloat16: VK_FORMAT_R32G32_UINT
        case .float8E4M3, .float8E5M2: VK_FORMAT_R32_UINT
        default: VK_FORMAT_R32G32B32A32_SFLOAT
        }
    }

    /// `range` as a texel view of 4-element texels: its start moved down to the texel
    /// alignment (the elements skipped added to `elementOffset`), its size whole texels
    /// within the buffer. Nil when that would break 4-element steps or pass maxTexels.
    func texelWindow(_ range: VulkanRange, elementOffset: Int, elementSize: Int) -> (VulkanRange, Int)? {
        let texelBytes = 4 * elementSize
        let start = range.offset / device.texelAlignment * device.texelAlignment
        let skipped = range.offset - start
        guard skipped % texelBytes == 0 else { return nil }
        let bytes = range.size + skipped
        var size = (bytes + texelBytes - 1) / texelBytes * texelBytes
        if start + size > range.buffer.size { size = bytes / texelBytes * texelBytes }
        guard size > 0, size / texelBytes <= device.maxTexels else { return nil }
        return (VulkanRange(buffer: range.buffer, offset: start, size: size), elementOffset + skipped / elementSize)
    }

    private func dispatchMatmul(_ call: MatmulDispatch, weightType: DType) throws {
        let suffix = Self.suffix(weightType)
        let batches = call.batch.reduce(1, *)
        let buffers = [call.windows.a, call.windows.b, call.windows.c]
        // Linear layout with K % 4 == 0 and 4-aligned offsets: the vec4 kernel (lavapipe's fastest).
        let aligned4 = ([call.aRow, call.bColumn, call.aOffset, call.bOffset] + call.aBatch + call.bBatch).allSatisfy { $0 % 4 == 0 }
        // Every matmul kernel runs 8×8 invocations per workgroup, each a block of outputs.
        func grid(_ block: (rows: Int, columns: Int)) -> (Int, Int, Int) {
            ((call.n + 8 * block.columns - 1) / (8 * block.columns), (call.m + 8 * block.rows - 1) / (8 * block.rows), batches)
        }
        if matmulVariant != .tiled && call.aColumn == 1 && call.bRow == 1 && call.k % 4 == 0 && aligned4 {
            if matmulVariant == .texel, let (aView, aOffset) = texelWindow(call.windows.a, elementOffset: call.aOffset, elementSize: 4),
               let (bView, bOffset) = texelWindow(call.windows.b, elementOffset: call.bOffset, elementSize: weightType.byteSize) {
                let block = vec4Block(texel: true, rows: call.m)
                var texel = call
                texel.aOffset = aOffset
                texel.bOffset = bOffset
                let pipeline = try device.pipeline("matmul_texel_\(suffix)", bindings: 3,
                                                   specialization: [UInt32(block.rows), UInt32(block.columns)], texelBindings: [0, 1])
                try recorder.dispatch(pipeline, [aView, bView, call.windows.c], constants: texel.constants, groups: grid(block),
                                      texelFormats: [0: VK_FORMAT_R32G32B32A32_SFLOAT, 1: Self.texelFormat(weightType)])
                return
            }
            let block = vec4Block(texel: false, rows: call.m)
            let pipeline = try device.pipeline("matmul_vec4_\(suffix)", bindings: 3, specialization: [UInt32(block.rows), UInt32(block.columns)])
            try recorder.dispatch(pipeline, buffers, constants: call.constants, groups: grid(block))
            return
        }
        let tiled = matmulVariant == .tiled
        let block = tiled ? 8 : configuration.registerBlock  // outputs per invocation in each direction (TM = TN)
        let pipeline = try device.pipeline(tiled ? "matmul_tiled_\(suffix)" : "matmul_\(suffix)", bindings: 3,
                                           specialization: [UInt32(block), UInt32(block)])
        try recorder.dispatch(pipeline, buffers, constants: call.constants, groups: grid((block, block)))
    }
}

#endif
