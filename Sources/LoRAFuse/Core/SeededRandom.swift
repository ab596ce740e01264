/// SplitMix64: a tiny, fast, reproducible generator for test data and default noise.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64

    /// A generator whose sequence is fixed by `seed`.
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform values in `range`, as a tensor of `dtype` (rounded once to it).
    public mutating func tensor(_ shape: Shape, dtype: DType = .float32, in range: ClosedRange<Double> = -1...1) -> HostTensor {
        let values = (0..<shape.elementCount).map { _ in Double(Float(Double.random(in: range, using: &self))) }
        return HostTensor(shape: shape, dtype: dtype, values: values)
    }

    /// A tensor of a GGUF block type with random blocks: every byte random, the f16 scales
    /// (d, and m/dmin where the type has one) set to finite values in ±`scale`, as the GGUF
    /// fixtures make K-quant blocks. `shape.last` must be a whole number of blocks.
    public mutating func blocks(_ shape: Shape, dtype: DType, scale: Float = 0.04) -> HostTensor {
        guard let format = dtype.blockFormat else { preconditionFailure("\(dtype.name) is not a block type") }
        precondition(shape.last % format.blockElements == 0, "rows of \(shape.last) are not whole \(dtype.name) blocks")
        return HostTensor(shape: shape, dtype: dtype) { buffer in
            for index in 0..<buffer.count { buffer[index] = UInt8.random(in: 0...255, using: &self) }
            for block in 0..<(buffer.count / format.blockBytes) {
                for offset in format.scaleOffsets {
                    let value = floatToHalfBits(Float.random(in: -scale...scale, using: &self))
                    buffer.storeBytes(of: value, toByteOffset: block * format.blockBytes + offset, as: UInt16.self)
                }
            }
        }
    }
}

/// Relative error as docs/contracts.md defines it: max|actual − expected| / max|expected|.
/// Positions where both are NaN agree; a NaN on one side only is an infinite error.
public func relativeError(actual: [Float], expected: [Double]) -> Double {
    precondition(actual.count == expected.count, "comparing \(actual.count) values with \(expected.count)")
    var worst = 0.0, scale = 0.0
    for (a, e) in zip(actual, expected) {
        if e.isNaN || a.isNaN {
            if e.isNaN != a.isNaN { return .infinity }
            continue
        }
        if e.isInfinite || a.isInfinite {
            if Double(a) != e { return .infinity }
            continue
        }
        worst = max(worst, abs(Double(a) - e))
        scale = max(scale, abs(e))
    }
    if scale == 0 { return worst }
    return worst / scale
}
