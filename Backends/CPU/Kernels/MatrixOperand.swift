import LoRAFuse

/// A strided 2-D view of a matrix in any weight type: element (row, column) lives at
/// `base + (row·rowStride + column·columnStride)·dtype.byteSize`. Transposition is a
/// swap of the strides, so kernels never copy a transposed weight. A block-quantized
/// matrix (GGUF Q8_0, Q4_K, …) is read only along its rows (`columnStride` 1, whole
/// blocks): row segments are dequantized block by block as they are loaded.
struct MatrixOperand {
    var base: UnsafeRawPointer
    var dtype: DType
    var rowStride: Int
    var columnStride: Int

    func offset(rows: Int, columns: Int) -> MatrixOperand {
        var copy = self
        copy.base = base + dtype.byteCount(elements: rows &* rowStride &+ columns &* columnStride)
        return copy
    }

    var transposed: MatrixOperand {
        MatrixOperand(base: base, dtype: dtype, rowStride: columnStride, columnStride: rowStride)
    }

    /// Widens `count` elements of row `row` starting at `column` into `output` (stride 1).
    @inline(__always)
    func loadRow(_ row: Int, column: Int, count: Int, into output: UnsafeMutablePointer<Float>) {
        let start = row &* rowStride &+ column &* columnStride
        switch dtype {
        case .float32:
            let pointer = base.assumingMemoryBound(to: Float.self) + start
            if columnStride == 1 {
                output.update(from: pointer, count: count)
            } else {
                for index in 0..<count { output[index] = pointer[index &* columnStride] }
            }
        case .float16:
            let pointer = base.assumingMemoryBound(to: UInt16.self) + start
            HalfTable.shared.values.withUnsafeBufferPointer { table in
                for index in 0..<count { output[index] = table[Int(pointer[index &* columnStride])] }
            }
        case .bfloat16:
            let pointer = base.assumingMemoryBound(to: UInt16.self) + start
            for index in 0..<count { output[index] = Float(bitPattern: UInt32(pointer[index &* columnStride]) << 16) }
        case .float8E4M3, .float8E5M2:
            let pointer = base.assumingMemoryBound(to: UInt8.self) + start
            let table = dtype == .float8E4M3 ? Float8Table.e4m3 : Float8Table.e5m2
            table.withUnsafeBufferPointer { values in
                for index in 0..<count { output[index] = values[Int(pointer[index &* columnStride])] }
            }
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q2K, .q3K, .q4K, .q5K, .q6K:
            precondition(columnStride == 1 && start % dtype.blockElements == 0 && count % dtype.blockElements == 0,
                         "a \(dtype.name) operand is read along its rows in whole blocks")
            QuantizedRows.dequantize(base + dtype.byteCount(elements: start), dtype: dtype, count: count, into: output)
        default:
            preconditionFailure("matrix operand of \(dtype.name)")
        }
    }
}
