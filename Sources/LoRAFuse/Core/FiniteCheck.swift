/// Finding NaN and infinity in stored values without widening a copy: the exponent field
/// of each element is all ones exactly when it is not finite.
extension HostTensor {
    /// The flat index of the first NaN or infinite element, or nil (integers are always finite).
    public func firstNonFiniteIndex() -> Int? {
        withUnsafeBytes { bytes -> Int? in
            guard let base = bytes.baseAddress else { return nil }
            func scan<T: FixedWidthInteger>(_: T.Type, mask: T) -> Int? {
                for index in 0..<elementCount where base.loadUnaligned(fromByteOffset: index &* MemoryLayout<T>.size, as: T.self) & mask == mask {
                    return index
                }
                return nil
            }
            switch dtype {
            case .float64: return scan(UInt64.self, mask: 0x7FF0_0000_0000_0000)
            case .float32: return scan(UInt32.self, mask: 0x7F80_0000)
            case .float16: return scan(UInt16.self, mask: 0x7C00)
            case .bfloat16: return scan(UInt16.self, mask: 0x7F80)
            // E4M3 (the "fn" variant): no infinities, NaN is S.1111.111.
            case .float8E4M3: return scan(UInt8.self, mask: 0x7F)
            case .float8E5M2: return scan(UInt8.self, mask: 0x7C)
            default: return nil
            }
        }
    }

    public var isAllFinite: Bool { firstNonFiniteIndex() == nil }
}
