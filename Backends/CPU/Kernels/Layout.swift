import LoRAFuse

/// Data movement: permute, slice, concat, embedding gather, casts.
enum LayoutKernels {
    /// Copies `x` (row-major `shape`, elements of `elementSize` bytes) into the axis order `order`.
    static func permute(_ x: UnsafeRawPointer, shape: Shape, order: [Int], elementSize: Int,
                        out: UnsafeMutableRawPointer, threads: Int) {
        let inputStrides = shape.strides
        let outShape = Shape(order.map { shape[$0] })
        let strides = order.map { inputStrides[$0] }  // input stride of each output axis
        let rank = outShape.rank
        let inner = rank == 0 ? 1 : outShape[rank - 1]
        let innerStride = rank == 0 ? 0 : strides[rank - 1]
        let rows = outShape.elementCount / max(inner, 1)
        let outer = Array(outShape.dimensions.dropLast())
        parallelFor(rows, threads: threads, minimumChunk: max(1, 16384 / max(inner, 1))) { range in
            for row in range {
                var remainder = row, offset = 0
                for axis in stride(from: outer.count - 1, through: 0, by: -1) {
                    offset &+= (remainder % outer[axis]) &* strides[axis]
                    remainder /= outer[axis]
                }
                let destination = out + row &* inner &* elementSize
                switch elementSize {
                case 4:
                    let source = x.assumingMemoryBound(to: UInt32.self) + offset
                    let target = destination.assumingMemoryBound(to: UInt32.self)
                    for j in 0..<inner { target[j] = source[j &* innerStride] }
                default:
                    for j in 0..<inner {
                        (destination + j &* elementSize).copyMemory(from: x + (offset &+ j &* innerStride) &* elementSize,
                                                                    byteCount: elementSize)
                    }
                }
            }
        }
    }

    /// Copies elements `start..<end` of `axis`.
    static func slice(_ x: UnsafeRawPointer, shape: Shape, axis: Int, start: Int, end: Int, elementSize: Int,
                      out: UnsafeMutableRawPointer) {
        let outer = shape.dimensions[..<axis].reduce(1, *)
        let inner = shape.dimensions[(axis + 1)...].reduce(1, *) * elementSize
        let extent = shape[axis]
        let width = (end - start) * inner
        for o in 0..<outer {
            (out + o * width).copyMemory(from: x + (o * extent + start) * inner, byteCount: width)
        }
    }

    /// Concatenates along `axis`; `parts` are (pointer, extent along axis).
    static func concat(_ parts: [(UnsafeRawPointer, Int)], outShape: Shape, axis: Int, elementSize: Int,
                       out: UnsafeMutableRawPointer) {
        let outer = outShape.dimensions[..<axis].reduce(1, *)
        let inner = outShape.dimensions[(axis + 1)...].reduce(1, *) * elementSize
        let outWidth = outShape[axis] * inner
        var offset = 0
        for (pointer, extent) in parts {
            let width = extent * inner
            for o in 0..<outer {
                (out + o * outWidth + offset).copyMemory(from: pointer + o * width, byteCount: width)
            }
            offset += width
        }
    }

    /// Rows of `table` (any weight type) picked by `ids`; an id outside the table is an error.
    static func embedding(table: MatrixOperand, vocabulary: Int, width: Int, ids: UnsafeRawPointer, idType: DType,
                          count: Int, out: UnsafeMutablePointer<Float>) throws(CPUKernelError) {
        for index in 0..<count {
            let id = idType == .int64 ? Int(ids.loadUnaligned(fromByteOffset: index * 8, as: Int64.self))
                                      : Int(ids.loadUnaligned(fromByteOffset: index * 4, as: Int32.self))
            guard (0..<vocabulary).contains(id) else {
                throw CPUKernelError(message: "embedding id \(id) at position \(index) is outside the table of \(vocabulary) rows")
            }
            table.loadRow(id, column: 0, count: width, into: out + index * width)
        }
    }
}

/// A kernel that found its data invalid (e.g. an out-of-range token id).
struct CPUKernelError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
