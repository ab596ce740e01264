import Foundation
import LoRAFuse

/// Element-wise kernels: broadcasting binary ops, scale and activations.
enum ElementwiseKernels {
    /// out = a ∘ b with numpy broadcasting. The innermost output axis is looped with
    /// per-operand strides (0 where broadcast); outer axes are walked with a counter.
    static func binary(_ op: BinaryOperator, a: UnsafePointer<Float>, aShape: Shape, b: UnsafePointer<Float>, bShape: Shape,
                       out: UnsafeMutablePointer<Float>, outShape: Shape, threads: Int) {
        let rank = outShape.rank
        let aStrides = aShape.broadcastStrides(to: outShape), bStrides = bShape.broadcastStrides(to: outShape)
        let inner = rank == 0 ? 1 : outShape[rank - 1]
        let rows = outShape.elementCount / max(inner, 1)
        let aInner = rank == 0 ? 0 : aStrides[rank - 1], bInner = rank == 0 ? 0 : bStrides[rank - 1]
        let outer = Array(outShape.dimensions.dropLast())
        parallelFor(rows, threads: threads, minimumChunk: max(1, 16384 / max(inner, 1))) { range in
            for row in range {
                var remainder = row, aOffset = 0, bOffset = 0
                for axis in stride(from: outer.count - 1, through: 0, by: -1) {
                    let index = remainder % outer[axis]
                    remainder /= outer[axis]
                    aOffset &+= index &* aStrides[axis]
                    bOffset &+= index &* bStrides[axis]
                }
                let o = out + row &* inner
                let x = a + aOffset, y = b + bOffset
                if aInner == 1 && bInner == 1 {
                    // Both contiguous along the row: a loop the compiler vectorises.
                    switch op {
                    case .add: for j in 0..<inner { o[j] = x[j] + y[j] }
                    case .sub: for j in 0..<inner { o[j] = x[j] - y[j] }
                    case .mul: for j in 0..<inner { o[j] = x[j] * y[j] }
                    case .div: for j in 0..<inner { o[j] = x[j] / y[j] }
                    }
                    continue
                }
                switch op {
                case .add: for j in 0..<inner { o[j] = x[j &* aInner] + y[j &* bInner] }
                case .sub: for j in 0..<inner { o[j] = x[j &* aInner] - y[j &* bInner] }
                case .mul: for j in 0..<inner { o[j] = x[j &* aInner] * y[j &* bInner] }
                case .div: for j in 0..<inner { o[j] = x[j &* aInner] / y[j &* bInner] }
                }
            }
        }
    }

    static func scale(_ x: UnsafePointer<Float>, by factor: Float, out: UnsafeMutablePointer<Float>, count: Int, threads: Int) {
        parallelFor(count, threads: threads, minimumChunk: 65536) { range in
            for index in range { out[index] = x[index] * factor }
        }
    }

    static func unary(_ function: UnaryFunction, _ x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, count: Int, threads: Int) {
        parallelFor(count, threads: threads, minimumChunk: 16384) { range in
            switch function {
            case .gelu:
                for index in range { let v = x[index]; out[index] = 0.5 * v * (1 + erf(v * 0.70710678118654752)) }
            case .geluTanh:
                // 0.5·x·(1 + tanh(u)) = x·sigmoid(2u), u = √(2/π)(x + 0.044715x³).
                forEachVector(x, out, range) { v in
                    let u = 0.79788456080286536 * (v + 0.044715 * v * v * v)
                    return v / (1 + vectorExp(-2 * u))
                }
            case .quickGelu:
                forEachVector(x, out, range) { v in v / (1 + vectorExp(-1.702 * v)) }
            case .silu:
                forEachVector(x, out, range) { v in v / (1 + vectorExp(-v)) }
            case .sigmoid:
                forEachVector(x, out, range) { v in 1 / (1 + vectorExp(-v)) }
            case .relu:
                for index in range { out[index] = max(x[index], 0) }
            case .tanh:
                for index in range { out[index] = Foundation.tanh(x[index]) }
            }
        }
    }
}
