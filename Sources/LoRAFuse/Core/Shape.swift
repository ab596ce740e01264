/// A tensor shape: the extent of each dimension, outermost first (row-major).
public struct Shape: Hashable, Sendable, CustomStringConvertible, ExpressibleByArrayLiteral {
    public var dimensions: [Int]

    /// A shape with these extents, outermost first.
    public init(_ dimensions: [Int]) { self.dimensions = dimensions }
    public init(arrayLiteral elements: Int...) { self.dimensions = elements }

    public var rank: Int { dimensions.count }
    /// The extent of `axis`.
    public subscript(axis: Int) -> Int { dimensions[axis] }

    /// Number of elements; callers that read untrusted shapes use `checkedElementCount`.
    public var elementCount: Int { dimensions.reduce(1, *) }

    /// Number of elements, or nil when it overflows `Int` or a dimension is negative.
    public var checkedElementCount: Int? {
        var count = 1
        for dimension in dimensions {
            guard dimension >= 0 else { return nil }
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            if overflow { return nil }
            count = product
        }
        return count
    }

    /// Row-major strides in elements.
    public var strides: [Int] {
        var strides = [Int](repeating: 1, count: rank)
        var running = 1
        for axis in stride(from: rank - 1, through: 0, by: -1) {
            strides[axis] = running
            running *= dimensions[axis]
        }
        return strides
    }

    /// The last dimension (1 for a scalar).
    public var last: Int { dimensions.last ?? 1 }

    /// Product of every dimension but the last: the number of rows of a row-wise op.
    public var rowCount: Int { rank == 0 ? 1 : dimensions.dropLast().reduce(1, *) }

    /// Resolves a negative axis (`-1` is the last) and checks it is in range.
    public func normalizedAxis(_ axis: Int) -> Int? {
        let resolved = axis < 0 ? axis + rank : axis
        return (0..<rank).contains(resolved) ? resolved : nil
    }

    public var description: String { "[" + dimensions.map(String.init).joined(separator: ", ") + "]" }
}

/// Shape and element type of a tensor.
public struct TensorType: Hashable, Sendable, CustomStringConvertible {
    public var shape: Shape
    public var dtype: DType

    /// A type of `shape` and `dtype`.
    public init(_ shape: Shape, _ dtype: DType = .float32) {
        self.shape = shape
        self.dtype = dtype
    }

    public var byteCount: Int { dtype.byteCount(elements: shape.elementCount) }
    public var description: String { "\(dtype.name)\(shape)" }
}
