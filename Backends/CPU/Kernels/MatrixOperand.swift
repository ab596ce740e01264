import LoRAFuse

/// A strided 2-D view of a matrix in any weight type: element (row, column) lives at
/// `base + (row·rowStride + column·columnStride)·dtype.byteSize`. Transposition is a
/// swap of the strides, so kernels never copy a transposed weight.
struct MatrixOperand {
    var base: UnsafeRawPointer
    var dtype: DType
    var rowStride: Int
    var columnStride: Int

    func offset(rows: Int, columns: Int) -> MatrixOperand {
        var copy = self
        copy.base = base + (rows &* rowStride &+ columns &* columnStride) &* dtype.byteSize
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
        default:
            preconditionFailure("matrix operand of \(dtype.name)")
        }
    }
}
