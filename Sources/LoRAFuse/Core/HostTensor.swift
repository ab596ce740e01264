import Foundation

/// A tensor in host memory: a shape, an element type and the row-major bytes.
/// Weights read from safetensors are views into the mapped file; nothing is copied.
public struct HostTensor: Sendable, CustomStringConvertible {
    public let type: TensorType
    public let storage: TensorStorage
    public let byteOffset: Int

    public var shape: Shape { type.shape }
    public var dtype: DType { type.dtype }
    public var elementCount: Int { type.shape.elementCount }
    public var byteCount: Int { type.byteCount }

    /// A view of `storage` from `byteOffset` (no copy).
    public init(type: TensorType, storage: TensorStorage, byteOffset: Int = 0) {
        precondition(byteOffset + type.byteCount <= storage.byteCount, "tensor range outside its storage")
        self.type = type
        self.storage = storage
        self.byteOffset = byteOffset
    }

    /// A zero-filled tensor that `fill` may write once.
    public init(shape: Shape, dtype: DType, fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        let type = TensorType(shape, dtype)
        self.init(type: type, storage: try TensorStorage(byteCount: type.byteCount, fill: fill))
    }

    /// A float32 tensor holding `floats` in row-major order.
    public init(shape: Shape, floats: [Float]) {
        precondition(floats.count == shape.elementCount, "\(floats.count) values for shape \(shape)")
        self.init(shape: shape, dtype: .float32) { buffer in
            floats.withUnsafeBytes { buffer.copyMemory(from: $0) }
        }
    }

    /// Converts `values` to `dtype` (rounding to nearest even for narrow floats).
    public init(shape: Shape, dtype: DType, values: [Double]) {
        precondition(values.count == shape.elementCount, "\(values.count) values for shape \(shape)")
        self.init(shape: shape, dtype: dtype) { buffer in
            ElementConversion.store(values, as: dtype, into: buffer)
        }
    }

    public var rawBytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: storage.baseAddress + byteOffset, count: byteCount)
    }

    /// Runs `body` on the bytes; the storage stays alive for the call.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withExtendedLifetime(storage) { try body(rawBytes) }
    }

    /// Every element widened to Float (integers and bools converted by value).
    public func floats() -> [Float] {
        withUnsafeBytes { ElementConversion.loadFloats($0, dtype: dtype, count: elementCount) }
    }

    /// Every element widened to Double.
    public func doubles() -> [Double] {
        withUnsafeBytes { ElementConversion.loadDoubles($0, dtype: dtype, count: elementCount) }
    }

    /// The same values in another element type.
    public func converted(to target: DType) -> HostTensor {
        if target == dtype { return self }
        return HostTensor(shape: shape, dtype: target, values: doubles())
    }

    /// The same bytes seen with another shape of equal element count.
    public func reshaped(_ newShape: Shape) -> HostTensor {
        precondition(newShape.elementCount == elementCount, "cannot reshape \(shape) to \(newShape)")
        return HostTensor(type: TensorType(newShape, dtype), storage: storage, byteOffset: byteOffset)
    }

    public var description: String { "HostTensor(\(type))" }
}

/// Element-wise conversion between stored types and Float/Double.
public enum ElementConversion {
    /// `count` elements of `dtype` at `bytes`, widened to float32.
    public static func loadFloats(_ bytes: UnsafeRawBufferPointer, dtype: DType, count: Int) -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { output, initialized in
            if count > 0 { convertToFloat(bytes.baseAddress!, dtype: dtype, count: count, into: output.baseAddress!) }
            initialized = count
        }
    }

    /// `count` elements of `dtype` at `bytes`, widened to float64.
    public static func loadDoubles(_ bytes: UnsafeRawBufferPointer, dtype: DType, count: Int) -> [Double] {
        guard count > 0, let base = bytes.baseAddress else { return [] }
        switch dtype {
        case .float64:
            return Array(UnsafeBufferPointer(start: base.assumingMemoryBound(to: Double.self), count: count))
        case .int64:
            return (0..<count).map { Double(base.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) }
        case .uint64:
            return (0..<count).map { Double(base.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self)) }
        default:
            return loadFloats(bytes, dtype: dtype, count: count).map(Double.init)
        }
    }

    /// Widens `count` elements of `dtype` at `source` to Float.
    public static func convertToFloat(_ source: UnsafeRawPointer, dtype: DType, count: Int,
                                      into output: UnsafeMutablePointer<Float>) {
        switch dtype {
        case .float32:
            output.update(from: source.assumingMemoryBound(to: Float.self), count: count)
        case .float16:
            let table = HalfTable.shared.values
            for index in 0..<count {
                output[index] = table[Int(source.loadUnaligned(fromByteOffset: index &* 2, as: UInt16.self))]
            }
        case .bfloat16:
            for index in 0..<count {
                output[index] = bfloat16BitsToFloat(source.loadUnaligned(fromByteOffset: index &* 2, as: UInt16.self))
            }
        case .float64:
            for index in 0..<count { output[index] = Float(source.loadUnaligned(fromByteOffset: index &* 8, as: Double.self)) }
        case .float8E4M3:
            for index in 0..<count { output[index] = float8E4M3BitsToFloat(source.load(fromByteOffset: index, as: UInt8.self)) }
        case .float8E5M2:
            for index in 0..<count { output[index] = float8E5M2BitsToFloat(source.load(fromByteOffset: index, as: UInt8.self)) }
        case .int64:
            for index in 0..<count { output[index] = Float(source.loadUnaligned(fromByteOffset: index &* 8, as: Int64.self)) }
        case .int32:
            for index in 0..<count { output[index] = Float(source.loadUnaligned(fromByteOffset: index &* 4, as: Int32.self)) }
        case .int16:
            for index in 0..<count { output[index] = Float(source.loadUnaligned(fromByteOffset: index &* 2, as: Int16.self)) }
        case .int8:
            for index in 0..<count { output[index] = Float(source.load(fromByteOffset: index, as: Int8.self)) }
        case .uint64:
            for index in 0..<count { output[index] = Float(source.loadUnaligned(fromByteOffset: index &* 8, as: UInt64.self)) }
        case .uint32:
            for index in 0..<count { output[index] = Float(source.loadUnaligned(fromByteOffset: index &* 4, as: UInt32.self)) }
        case .uint16:
            for index in 0..<count { output[index] = Float(source.loadUnaligned(fromByteOffset: index &* 2, as: UInt16.self)) }
        case .uint8, .bool:
            for index in 0..<count { output[index] = Float(source.load(fromByteOffset: index, as: UInt8.self)) }
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q2K, .q3K, .q4K, .q5K, .q6K:
            // `count` is a whole number of blocks (tensor shapes are checked for that).
            dtype.blockFormat!.dequantize(source, count: count, into: output)
        }
    }

    /// Narrows Float values to `dtype` (round to nearest even; integers truncate toward zero).
    public static func convertFromFloat(_ input: UnsafePointer<Float>, count: Int, to dtype: DType,
                                        into destination: UnsafeMutableRawPointer) {
        switch dtype {
        case .float32:
            destination.copyMemory(from: input, byteCount: count * 4)
        case .float16:
            for index in 0..<count { destination.storeBytes(of: floatToHalfBits(input[index]), toByteOffset: index &* 2, as: UInt16.self) }
        case .bfloat16:
            for index in 0..<count { destination.storeBytes(of: floatToBFloat16Bits(input[index]), toByteOffset: index &* 2, as: UInt16.self) }
        default:
            let values = UnsafeBufferPointer(start: input, count: count).map(Double.init)
            store(values, as: dtype, into: UnsafeMutableRawBufferPointer(start: destination, count: count * dtype.byteSize))
        }
    }

    /// Writes Double values as `dtype` (narrow floats round to nearest even; integers
    /// round toward zero and clamp to the type's range; NaN becomes 0 for integers).
    /// Narrow floats go through Float first, so they round as torch casts a float32 tensor.
    public static func store(_ values: [Double], as dtype: DType, into buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress else { return }
        func integer<T: FixedWidthInteger>(_ value: Double, _: T.Type) -> T {
            if value.isNaN { return 0 }
            if value >= Double(T.max) { return T.max }
            if value <= Double(T.min) { return T.min }
            return T(value.rounded(.towardZero))
        }
        for (index, value) in values.enumerated() {
            switch dtype {
            case .float64: base.storeBytes(of: value, toByteOffset: index * 8, as: Double.self)
            case .float32: base.storeBytes(of: Float(value), toByteOffset: index * 4, as: Float.self)
            case .float16: base.storeBytes(of: floatToHalfBits(Float(value)), toByteOffset: index * 2, as: UInt16.self)
            case .bfloat16: base.storeBytes(of: floatToBFloat16Bits(Float(value)), toByteOffset: index * 2, as: UInt16.self)
            case .float8E4M3: base.storeBytes(of: floatToFloat8E4M3Bits(Float(value)), toByteOffset: index, as: UInt8.self)
            case .float8E5M2: base.storeBytes(of: floatToFloat8E5M2Bits(Float(value)), toByteOffset: index, as: UInt8.self)
            case .int64: base.storeBytes(of: integer(value, Int64.self), toByteOffset: index * 8, as: Int64.self)
            case .int32: base.storeBytes(of: integer(value, Int32.self), toByteOffset: index * 4, as: Int32.self)
            case .int16: base.storeBytes(of: integer(value, Int16.self), toByteOffset: index * 2, as: Int16.self)
            case .int8: base.storeBytes(of: integer(value, Int8.self), toByteOffset: index, as: Int8.self)
            case .uint64: base.storeBytes(of: integer(value, UInt64.self), toByteOffset: index * 8, as: UInt64.self)
            case .uint32: base.storeBytes(of: integer(value, UInt32.self), toByteOffset: index * 4, as: UInt32.self)
            case .uint16: base.storeBytes(of: integer(value, UInt16.self), toByteOffset: index * 2, as: UInt16.self)
            case .uint8: base.storeBytes(of: integer(value, UInt8.self), toByteOffset: index, as: UInt8.self)
            case .bool: base.storeBytes(of: UInt8(value != 0 ? 1 : 0), toByteOffset: index, as: UInt8.self)
            case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q2K, .q3K, .q4K, .q5K, .q6K:
                preconditionFailure("LoRAFuse reads \(dtype.name) weights but does not quantize")
            }
        }
    }

}

/// All 65,536 float16 values as Float: the fastest exact widening without F16C.
/// Every float8 value, by bit pattern.
public enum Float8Table {
    public static let e4m3: [Float] = (0...255).map { float8E4M3BitsToFloat(UInt8($0)) }
    public static let e5m2: [Float] = (0...255).map { float8E5M2BitsToFloat(UInt8($0)) }
}

/// All 65,536 float16 values as float32, for exact table-driven widening.
public final class HalfTable: Sendable {
    public static let shared = HalfTable()
    public let values: [Float]
    private init() { values = (0...UInt16.max).map(halfBitsToFloat) }
}
