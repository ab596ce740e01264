/// How a (batched, possibly transposed, broadcast) matmul node addresses its operands:
/// sizes, each operand's element strides within one matrix, and per batch axis the
/// element offset of each operand (0 where it broadcasts). Every backend kernel reads
/// through this, so the layout rules live in one place.
public struct MatmulLayout: Sendable, Equatable {
    public let m: Int, n: Int, k: Int
    /// Output batch axes (everything before the last two).
    public let batchShape: [Int]
    /// a(i, p) at i·aRowStride + p·aColumnStride within one matrix.
    public let aRowStride: Int, aColumnStride: Int
    /// b(p, j) at p·bRowStride + j·bColumnStride within one matrix.
    public let bRowStride: Int, bColumnStride: Int
    /// Element stride of each operand per output batch axis.
    public let aBatchStrides: [Int], bBatchStrides: [Int]

    /// The layout of `a · b` as the graph shaped it.
    public init(a: Shape, b: Shape, transposeA: Bool, transposeB: Bool, output: Shape) {
        m = output[output.rank - 2]
        n = output[output.rank - 1]
        k = transposeA ? a[a.rank - 2] : a[a.rank - 1]
        batchShape = Array(output.dimensions.dropLast(2))
        (aRowStride, aColumnStride) = transposeA ? (1, m) : (k, 1)
        (bRowStride, bColumnStride) = transposeB ? (1, k) : (n, 1)
        aBatchStrides = Self.batchStrides(a.dimensions, matrix: m * k, batchRank: batchShape.count)
        bBatchStrides = Self.batchStrides(b.dimensions, matrix: k * n, batchRank: batchShape.count)
    }

    public var batchCount: Int { batchShape.reduce(1, *) }

    /// Element offsets of A's and B's matrices for flat batch index `index` (C's is index·m·n).
    public func offsets(batch index: Int) -> (a: Int, b: Int) {
        var remainder = index, a = 0, b = 0
        for axis in stride(from: batchShape.count - 1, through: 0, by: -1) {
            let position = remainder % batchShape[axis]
            remainder /= batchShape[axis]
            a += position * aBatchStrides[axis]
            b += position * bBatchStrides[axis]
        }
        return (a, b)
    }

    private static func batchStrides(_ dims: [Int], matrix: Int, batchRank: Int) -> [Int] {
        let padded = [Int](repeating: 1, count: batchRank - (dims.count - 2)) + dims.dropLast(2)
        var strides = [Int](repeating: 0, count: padded.count)
        var running = matrix
        for axis in stride(from: padded.count - 1, through: 0, by: -1) {
            strides[axis] = padded[axis] == 1 ? 0 : running
            running *= padded[axis]
        }
        return strides
    }
}

extension Shape {
    /// Element strides for reading this shape broadcast (numpy rules) to `output`:
    /// one per output axis, 0 along axes this shape lacks or has as 1.
    public func broadcastStrides(to output: Shape) -> [Int] {
        let padded = [Int](repeating: 1, count: output.rank - rank) + dimensions
        let strides = Shape(padded).strides
        return (0..<output.rank).map { padded[$0] == 1 ? 0 : strides[$0] }
    }
}
