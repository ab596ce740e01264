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
                      out: UnsafeMutableRawPointer, threads: Int = 1) {
        let outer = shape.dimensions[..<axis].reduce(1, *)
        let inner = shape.dimensions[(axis + 1)...].reduce(1, *) * elementSize
        let width = (end - start) * inner
        copyRows(outer, bytes: width, from: x + start * inner, stride: shape[axis] * inner, to: out, stride: width, threads: threads)
    }

    /// Concatenates along `axis`; `parts` are (pointer, extent along axis).
    static func concat(_ parts: [(UnsafeRawPointer, Int)], outShape: Shape, axis: Int, elementSize: Int,
                       out: UnsafeMutableRawPointer, threads: Int = 1) {
        let outer = outShape.dimensions[..<axis].reduce(1, *)
        let inner = outShape.dimensions[(axis + 1)...].reduce(1, *) * elementSize
        let outWidth = outShape[axis] * inner
        var offset = 0
        for (pointer, extent) in parts {
            let width = extent * inner
            copyRows(outer, bytes: width, from: pointer, stride: width, to: out + offset, stride: outWidth, threads: threads)
            offset += width
        }
    }

    /// `rows` copies of `bytes` between strided rows, split between threads in pieces of
    /// about 256 KiB (by rows, or within a row when there are few long ones).
    static func copyRows(_ rows: Int, bytes: Int, from source: UnsafeRawPointer, stride sourceStride: Int,
                         to destination: UnsafeMutableRawPointer, stride destinationStride: Int, threads: Int) {
        let piece = 1 << 18
        let piecesPerRow = max(1, (bytes + piece - 1) / piece)
        let pieceBytes = (bytes + piecesPerRow - 1) / piecesPerRow
        parallelFor(rows * piecesPerRow, threads: threads, minimumChunk: max(1, piece / max(pieceBytes, 1))) { range in
            for task in range {
                let row = task / piecesPerRow, start = (task % piecesPerRow) * pieceBytes
                let count = min(pieceBytes, bytes - start)
                guard count > 0 else { continue }
                (destination + row * destinationStride + start).copyMemory(from: source + row * sourceStride + start, byteCount: count)
            }
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
