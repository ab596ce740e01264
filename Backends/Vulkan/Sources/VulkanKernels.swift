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

    /// Pads `dimensions`/`strides` at the front to rank 6 (extent 1, stride 0).
    static func rank6(_ values: [Int], fill: Int) -> VulkanWords6 {
        VulkanWords6(([Int](repeating: fill, count: 6 - values.count) + values).map { UInt32($0) })
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
            try recorder.dispatch(device.pipeline(.loraGate), bindings + [output],
                                  constants: LoraGateConstants(rows: UInt32(type.shape.rowCount), width: UInt32(type.shape.last),
                                                               count: UInt32(loras.count), epsilon: epsilon),
                                  groups: VulkanCommandRecorder.groups1D(type.shape.rowCount, localSize: 1))
        case let .lowRankGate(epsilon, ranks):
            var offsets = [UInt32(0)]
            for rank in ranks { offsets.append(offsets.last! + UInt32(rank)) }
            offsets += Array(repeating: offsets.last!, count: Graph.maximumGateInputs + 1 - offsets.count)
            try recorder.dispatch(device.pipeline(.loraGateLowrank), operands[0...3].map(\.0) + [output],
                                  constants: LoraGateLowrankConstants(rows: UInt32(type.shape.rowCount), width: UInt32(type.shape.last),
                                                                      count: UInt32(ranks.count), epsilon: epsilon, total: offsets.last!,
                                                                      offsets: VulkanWords9(offsets)),
                                  groups: VulkanCommandRecorder.groups1D(type.shape.rowCount, localSize: 1))
        case let .binary(op):
            let constants = BinaryConstants(count: UInt32(count), op: VulkanBinaryCode(op).rawValue, dims: Self.rank6(type.shape.dimensions, fill: 1),
                                            aStrides: Self.rank6(operands[0].1.shape.broadcastStrides(to: type.shape), fill: 0),
                                            bStrides: Self.rank6(operands[1].1.shape.broadcastStrides(to: type.shape), fill: 0))
            try recorder.dispatch(device.pipeline(.binary), [operands[0].0, operands[1].0, output],
                                  constants: constants, groups: VulkanCommandRecorder.groups1D(count, localSize: 256))
        case let .scale(factor):
            try unary(.scale, factor: factor, operands[0].0, output, count)
        case let .unary(function):
            try unary(VulkanUnaryCode(function), factor: 1, operands[0].0, output, count)
        case .softmax:
            try rowwise(.softmax, operands, output, type.shape, epsilon: 0)
        case let .layerNorm(epsilon):
            try rowwise(.layerNorm, operands, output, type.shape, epsilon: epsilon)
        case let .rmsNorm(epsilon):
            try rowwise(.rmsNorm, operands, output, type.shape, epsilon: epsilon)
        case .rotaryEmbedding:
            let shape = type.shape
            let pairs = count / 2
            try recorder.dispatch(device.pipeline(.rope), [operands[0].0, operands[1].0, operands[2].0, output],
                                  constants: RopeConstants(pairs: UInt32(pairs), sequenceLength: UInt32(shape[1]), heads: UInt32(shape[2]),
                                                           halfDim: UInt32(shape[3] / 2)),
                                  groups: VulkanCommandRecorder.groups1D(pairs, localSize: 256))
        case let .attention(scale, causal):
            try attention(operands, output: output, scale: scale, causal: causal)
        case let .conv2d(padding):
            let (x, weight) = (operands[0], operands[1])
            let shape = type.shape, pixels = shape[2] * shape[3]
            let block = Self.convolutionBlock
            let pipeline = try device.pipeline(.conv2d(VulkanWeightFormat(weight.1.dtype)),
                                               specialization: [UInt32(block.channels), UInt32(block.pixels)])
            let constants = Conv2dConstants(channels: UInt32(x.1.shape[1]), height: UInt32(x.1.shape[2]), width: UInt32(x.1.shape[3]),
                                            outputs: UInt32(shape[1]), outHeight: UInt32(shape[2]), outWidth: UInt32(shape[3]),
                                            kh: UInt32(weight.1.shape[2]), kw: UInt32(weight.1.shape[3]), padding: UInt32(padding),
                                            hasBias: operands.count == 3 ? 1 : 0)
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
        case .embedding where table(operands[0]).dtype.isBlockQuantized:
            try gatherBlocks(operands[0], ids: operands[1], output: output, count: count)
        case .embedding:
            let table = operands[0], ids = operands[1]
            let (rows, width, size) = (table.1.shape[0], table.1.shape[1], table.1.dtype.byteSize)
            // An imported table may start past its aligned binding start (VulkanRange.leading).
            let leading = table.0.leading / size
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
                    ? (table.0, leading) : self.window(table.0, start: leading + start * width, count: windowRows * width, size: size)
                try recorder.dispatch(device.pipeline(.convert), [window, ids.0, output],
                                      constants: ConvertConstants(count: UInt32(count), mode: VulkanConvertCode.gather.rawValue,
                                                                  inDtype: VulkanDTypeCode(table.1.dtype).rawValue,
                                                                  idDtype: VulkanDTypeCode(ids.1.dtype).rawValue, width: UInt32(width), elements: 0,
                                                                  rowStart: UInt32(start), rowCount: UInt32(windowRows), inOffset: UInt32(offset)),
                                      groups: VulkanCommandRecorder.groups1D(count, localSize: 256))
            }
        case let .cast(target):
            let source = operands[0]
            if let format = VulkanBlockWeightFormat(source.1.dtype) {
                // `supports` admits block types to F32 only.
                try recorder.dispatch(device.pipeline(.dequantize(format)), [source.0, output],
                                      constants: DequantizeConstants(count: UInt32(count)),
                                      groups: VulkanCommandRecorder.groups1D(count, localSize: 256))
            } else if target == .float32 {
                try widen(source.0, source.1.dtype, output, count)
            } else {
                let words = (count + 1) / 2
                let mode: VulkanConvertCode = target == .float16 ? .narrowF16 : .narrowBF16
                try recorder.dispatch(device.pipeline(.convert), [source.0, source.0, output],
                                      constants: ConvertConstants(count: UInt32(words), mode: mode.rawValue,
                                                                  inDtype: VulkanDTypeCode(source.1.dtype).rawValue, idDtype: 0, width: 1,
                                                                  elements: UInt32(count), rowStart: 0, rowCount: 0, inOffset: 0),
                                      groups: VulkanCommandRecorder.groups1D(words, localSize: 256))
            }
        }
    }

    /// `count` elements of `dtype` at `input` converted to float32 at `output`.
    private func widen(_ input: VulkanRange, _ dtype: DType, _ output: VulkanRange, _ count: Int) throws {
        try recorder.dispatch(device.pipeline(.convert), [input, input, output],
                              constants: ConvertConstants(count: UInt32(count), mode: VulkanConvertCode.widen.rawValue,
                                                          inDtype: VulkanDTypeCode(dtype).rawValue, idDtype: 0, width: 1,
                                                          elements: UInt32(count), rowStart: 0, rowCount: 0, inOffset: 0),
                              groups: VulkanCommandRecorder.groups1D(count, localSize: 256))
    }

    private func unary(_ function: VulkanUnaryCode, factor: Float, _ input: VulkanRange, _ output: VulkanRange, _ count: Int) throws {
        try recorder.dispatch(device.pipeline(.unary), [input, output],
                              constants: UnaryConstants(count: UInt32(count), function: function.rawValue, factor: factor),
                              groups: VulkanCommandRecorder.groups1D(count, localSize: 256))
    }

    private func rowwise(_ mode: VulkanRowwiseCode, _ operands: [(VulkanRange, TensorType)], _ output: VulkanRange, _ shape: Shape,
                         epsilon: Float) throws {
        let input = operands[0].0
        let weight = operands.count > 1 ? operands[1].0 : input
        let bias = operands.count > 2 ? operands[2].0 : input
        let rows = shape.rowCount
        try recorder.dispatch(device.pipeline(.rowwise), [input, weight, bias, output],
                              constants: RowwiseConstants(rows: UInt32(rows), width: UInt32(shape.last), mode: mode.rawValue,
                                                          hasWeight: operands.count > 1 ? 1 : 0, epsilon: epsilon),
                              groups: VulkanCommandRecorder.groups1D(rows, localSize: 1))
    }

    private func copy(_ input: VulkanRange, _ output: VulkanRange, dims: [Int], inStrides: [Int], outStrides: [Int],
                      inOffset: Int, outOffset: Int) throws {
        let count = dims.reduce(1, *)
        guard count > 0 else { return }
        let constants = CopyConstants(count: UInt32(count), inOffset: UInt32(inOffset), outOffset: UInt32(outOffset),
                                      dims: Self.rank6(dims, fill: 1), inStrides: Self.rank6(inStrides, fill: 0),
                                      outStrides: Self.rank6(outStrides, fill: 0))
        try recorder.dispatch(device.pipeline(.copy), [input, output], constants: constants,
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
        var constants = AttentionConstants(queryLength: UInt32(queryLength), keyLength: UInt32(keyLength), heads: UInt32(heads),
                                           scale: scale, causal: causal ? 1 : 0, hasMask: mask == nil ? 0 : 1,
                                           maskBatchStride: UInt32(maskBatchStride), maskHeadStride: UInt32(maskHeadStride),
                                           queryBlocks: UInt32(blocks), kOffset: 0, vOffset: 0)
        var buffers = [operands[0].0, operands[1].0, operands[2].0, mask?.0 ?? operands[0].0, output]
        let groups = VulkanCommandRecorder.groups1D(batch * heads * blocks, localSize: 1)
        if texel,
           let (keys, keyOffset) = texelWindow(operands[1].0, elementOffset: 0, elementSize: 4),
           let (values, valueOffset) = texelWindow(operands[2].0, elementOffset: 0, elementSize: 4) {
            constants.kOffset = UInt32(keyOffset / 4)
            constants.vOffset = UInt32(valueOffset / 4)
            buffers[1] = keys
            buffers[2] = values
            let pipeline = try device.pipeline(.attentionTexel, specialization: [UInt32(headDim), UInt32(queries)])
            try recorder.dispatch(pipeline, buffers, constants: constants, groups: groups,
                                  texelFormats: [1: VK_FORMAT_R32G32B32A32_SFLOAT, 2: VK_FORMAT_R32G32B32A32_SFLOAT])
            return
        }
        try recorder.dispatch(device.pipeline(registers ? .attentionRegisters : .attention,
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

        var constants: MatmulConstants {
            MatmulConstants(m: UInt32(m), n: UInt32(n), k: UInt32(k), aRowStride: UInt32(aRow), aColStride: UInt32(aColumn),
                            bRowStride: UInt32(bRow), bColStride: UInt32(bColumn), batch1: UInt32(batch[1]), batch2: UInt32(batch[2]),
                            aBatch0: UInt32(aBatch[0]), aBatch1: UInt32(aBatch[1]), aBatch2: UInt32(aBatch[2]),
                            bBatch0: UInt32(bBatch[0]), bBatch1: UInt32(bBatch[1]), bBatch2: UInt32(bBatch[2]),
                            aOffset: UInt32(aOffset), bOffset: UInt32(bOffset), cOffset: UInt32(cOffset), cRowStride: UInt32(cRowStride))
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
        // An imported weight may start past its aligned binding start (VulkanRange.leading).
        let bLeading = b.1.dtype.isBlockQuantized ? 0 : b.0.leading / max(1, b.1.dtype.byteSize)
        base.bOffset = bLeading
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
        let bRowBytes = b.1.dtype.byteCount(elements: k)
        var columnsPerChunk = bTransposed ? min(n, budget / max(1, bRowBytes)) : n
        let blocks = b.1.dtype.isBlockQuantized
        if blocks {
            // Block rows are not element-addressable: every window starts at an aligned byte,
            // so chunks of columns are whole multiples of the rows that make one alignment step.
            let step = device.windowAlignment / gcd(bRowBytes, device.windowAlignment)
            columnsPerChunk = columnsPerChunk / step * step
        }
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
                    let (bWindow, bResidual) = blocks
                        ? (blockWindow(b.0, firstRow: column, rows: columns, rowBytes: bRowBytes), 0)
                        : bTransposed
                        ? window(b.0, start: bLeading + bMatrix + column * k, count: columns * k, size: bSize)
                        : window(b.0, start: bLeading + bMatrix, count: k * n, size: bSize)
                    chunk.bOffset = bResidual + (bTransposed ? 0 : column)
                    let (cWindow, cResidual) = window(output, start: cMatrix + row * n + column, count: (rows - 1) * n + columns, size: 4)
                    chunk.cOffset = cResidual
                    chunk.windows = (aWindow, bWindow, cWindow)
                    try dispatchMatmul(chunk, weightType: b.1.dtype)
                }
            }
        }
    }

    private func table(_ operand: (VulkanRange, TensorType)) -> TensorType { operand.1 }

    /// Rows of a GGUF block table gathered by id and dequantized (`gather_block_<type>`); a
    /// table past the binding limit is bound a window of whole rows at a time, each window
    /// starting at an aligned byte.
    private func gatherBlocks(_ table: (VulkanRange, TensorType), ids: (VulkanRange, TensorType), output: VulkanRange, count: Int) throws {
        guard let format = VulkanBlockWeightFormat(table.1.dtype) else { return }
        let (rows, width) = (table.1.shape[0], table.1.shape[1])
        let rowBytes = table.1.dtype.byteCount(elements: width)
        var rowsPerWindow = rows
        if table.0.size > device.bindingLimit {
            let step = device.windowAlignment / gcd(rowBytes, device.windowAlignment)
            rowsPerWindow = (device.bindingLimit - 4) / max(1, rowBytes) / step * step
            guard rowsPerWindow >= 1 else {
                throw BackendError.outOfMemory(backend: "vulkan", bytes: rowBytes * step, reason: "embedding rows cannot be bound within maxStorageBufferRange")
            }
        }
        for start in stride(from: 0, to: rows, by: rowsPerWindow) {
            let windowRows = min(rowsPerWindow, rows - start)
            let window = rowsPerWindow == rows ? table.0 : blockWindow(table.0, firstRow: start, rows: windowRows, rowBytes: rowBytes)
            try recorder.dispatch(device.pipeline(.gatherBlock(format)), [window, ids.0, output],
                                  constants: GatherBlockConstants(count: UInt32(count), width: UInt32(width),
                                                                  idDtype: VulkanDTypeCode(ids.1.dtype).rawValue,
                                                                  rowStart: UInt32(start), rowCount: UInt32(windowRows)),
                                  groups: VulkanCommandRecorder.groups1D(count, localSize: 256))
        }
    }

    /// A binding window over rows `firstRow..<firstRow+rows` of a block-quantized weight
    /// whose rows are `rowBytes` long; the first row's byte is window-aligned (see `matmul`).
    func blockWindow(_ range: VulkanRange, firstRow: Int, rows: Int, rowBytes: Int) -> VulkanRange {
        let start = range.offset + firstRow * rowBytes
        precondition(start % device.windowAlignment == 0, "block window at an unaligned byte")
        return VulkanRange(buffer: range.buffer, offset: start, size: (rows * rowBytes + 3) & ~3)
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
            let format = VulkanFactorFormat(down.1.dtype)
            let pipeline = try device.pipeline(wide ? .loraUpdateVec4(format) : .loraUpdate(format))
            let (yWindow, yOffset) = window(y.0, start: start * n, count: count * n, size: 4)
            let (outWindow, outOffset) = window(output, start: start * n, count: count * n, size: 4)
            let constants = LoraUpdateConstants(rows: UInt32(count), n: UInt32(n), k: UInt32(k), rank: UInt32(rank),
                                                rowsPerGroup: UInt32(rowsPerGroup), scale: scale,
                                                xOffset: UInt32(xOffset), yOffset: UInt32(yOffset), outOffset: UInt32(outOffset))
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
        let control = try device.pipeline(.topkControl)
        func controlStep(_ mode: VulkanTopkControlCode, shift: UInt32 = 0) throws {
            try recorder.dispatch(control, [histogram, state, partials, output],
                                  constants: TopkControlConstants(mode: mode.rawValue, k: UInt32(k), shift: shift, partialCount: UInt32(partialCount)),
                                  groups: (1, 1, 1))
        }
        try controlStep(.clear)
        let pass = try device.pipeline(.topkHistogram)
        for shift: UInt32 in [24, 16, 8, 0] {
            for (window, groupCount) in zip(windows, groups) {
                try recorder.dispatch(pass, [window.range, histogram, state],
                                      constants: TopkHistogramConstants(count: UInt32(window.count), offset: UInt32(window.offset), shift: shift),
                                      groups: VulkanCommandRecorder.groups1D(groupCount, localSize: 1))
            }
            try controlStep(.select, shift: shift)
        }
        let sum = try device.pipeline(.topkSum)
        var first = 0
        for (window, groupCount) in zip(windows, groups) {
            try recorder.dispatch(sum, [window.range, state, partials],
                                  constants: TopkSumConstants(count: UInt32(window.count), offset: UInt32(window.offset), partialOffset: UInt32(first)),
                                  groups: VulkanCommandRecorder.groups1D(groupCount, localSize: 1))
            first += groupCount
        }
        try controlStep(.finish)
    }

    /// Top-K of LoRA updates: each ΔW = (scale·up)·down is computed by the matmul kernel
    /// into a scratch buffer that lives only for this op (windowed past the binding limit),
    /// then the radix selection runs over all of them as one set.
    private func lowRankTopKAbsSum(_ operands: [(VulkanRange, TensorType)], output: VulkanRange, k: Int, scales: [Float]) throws {
        let aligned = device.storageAligned
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
            try unary(.scale, factor: scale, source, scaled, count)
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
        let batches = call.batch.reduce(1, *)
        let buffers = [call.windows.a, call.windows.b, call.windows.c]
        // Linear layout with K % 4 == 0 and 4-aligned offsets: the vec4 kernel (lavapipe's fastest).
        let aligned4 = ([call.aRow, call.bColumn, call.aOffset, call.bOffset] + call.aBatch + call.bBatch).allSatisfy { $0 % 4 == 0 }
        // Every matmul kernel runs 8×8 invocations per workgroup, each a block of outputs.
        func grid(_ block: (rows: Int, columns: Int)) -> (Int, Int, Int) {
            ((call.n + 8 * block.columns - 1) / (8 * block.columns), (call.m + 8 * block.rows - 1) / (8 * block.rows), batches)
        }
        if let blockFormat = VulkanBlockWeightFormat(weightType) {
            // GGUF blocks: the scalar kernels, whose `load_b` dequantizes one element in registers.
            let tiled = matmulVariant == .tiled
            let block = tiled ? 8 : configuration.registerBlock
            let pipeline = try device.pipeline(tiled ? .matmulBlockTiled(blockFormat) : .matmulBlock(blockFormat),
                                               specialization: [UInt32(block), UInt32(block)])
            try recorder.dispatch(pipeline, buffers, constants: call.constants, groups: grid((block, block)))
            return
        }
        let format = VulkanWeightFormat(weightType)
        if matmulVariant != .tiled && call.aColumn == 1 && call.bRow == 1 && call.k % 4 == 0 && aligned4 {
            if matmulVariant == .texel, let (aView, aOffset) = texelWindow(call.windows.a, elementOffset: call.aOffset, elementSize: 4),
               let (bView, bOffset) = texelWindow(call.windows.b, elementOffset: call.bOffset, elementSize: weightType.byteSize) {
                let block = vec4Block(texel: true, rows: call.m)
                var texel = call
                texel.aOffset = aOffset
                texel.bOffset = bOffset
                let pipeline = try device.pipeline(.matmulTexel(format), specialization: [UInt32(block.rows), UInt32(block.columns)])
                try recorder.dispatch(pipeline, [aView, bView, call.windows.c], constants: texel.constants, groups: grid(block),
                                      texelFormats: [0: VK_FORMAT_R32G32B32A32_SFLOAT, 1: Self.texelFormat(weightType)])
                return
            }
            let block = vec4Block(texel: false, rows: call.m)
            let pipeline = try device.pipeline(.matmulVec4(format), specialization: [UInt32(block.rows), UInt32(block.columns)])
            try recorder.dispatch(pipeline, buffers, constants: call.constants, groups: grid(block))
            return
        }
        let tiled = matmulVariant == .tiled
        let block = tiled ? 8 : configuration.registerBlock  // outputs per invocation in each direction (TM = TN)
        let pipeline = try device.pipeline(tiled ? .matmulTiled(format) : .matmul(format), specialization: [UInt32(block), UInt32(block)])
        try recorder.dispatch(pipeline, buffers, constants: call.constants, groups: grid((block, block)))
    }
}

// The graph's element types and operators in the shaders' codes (Shaders/kernels.json).
extension VulkanWeightFormat {
    /// The weight-format variant that reads `dtype` (`supports` has refused other types).
    init(_ dtype: DType) {
        switch dtype {
        case .float16: self = .f16
        case .bfloat16: self = .bf16
        case .float8E4M3: self = .f8e4m3
        case .float8E5M2: self = .f8e5m2
        default: self = .f32
        }
    }
}

extension VulkanBlockWeightFormat {
    /// The block-quantized variant that reads `dtype` (the manifest names them as ggml does,
    /// lower-cased: `q4_k`); nil for the element types.
    init?(_ dtype: DType) {
        guard let format = dtype.blockFormat else { return nil }
        self.init(rawValue: format.description.lowercased())
    }
}

extension VulkanFactorFormat {
    init(_ dtype: DType) {
        switch dtype {
        case .float16: self = .f16
        case .bfloat16: self = .bf16
        default: self = .f32
        }
    }
}

extension VulkanDTypeCode {
    init(_ dtype: DType) {
        switch dtype {
        case .float16: self = .f16
        case .bfloat16: self = .bf16
        case .int32: self = .i32
        case .int64: self = .i64
        case .float8E4M3: self = .f8e4m3
        case .float8E5M2: self = .f8e5m2
        default: self = .f32
        }
    }
}

extension VulkanBinaryCode {
    init(_ op: BinaryOperator) {
        switch op {
        case .add: self = .add
        case .sub: self = .sub
        case .mul: self = .mul
        case .div: self = .div
        }
    }
}

extension VulkanUnaryCode {
    init(_ function: UnaryFunction) {
        switch function {
        case .gelu: self = .gelu
        case .geluTanh: self = .geluTanh
        case .quickGelu: self = .quickGelu
        case .silu: self = .silu
        case .sigmoid: self = .sigmoid
        case .relu: self = .relu
        case .tanh: self = .tanh
        }
    }
}

/// The greatest common divisor of two positive integers.
func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }

#endif
