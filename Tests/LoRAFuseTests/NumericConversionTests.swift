import Testing
@testable import LoRAFuse
@testable import LoRAFuseFusion
@testable import LoRAFusePipeline

@Suite struct HalfConversionTests {
    @Test(arguments: [
        (Float(1.0), UInt16(0x3C00)), (-2.0, 0xC000), (65504, 0x7BFF), (65519.99, 0x7BFF), (65520, 0x7C00),
        (0x1p-24, 0x0001), (0x1p-25, 0x0000), (0x1.8p-25, 0x0001), (0x1p-14, 0x0400), (0x1.ffcp-15, 0x0400), (0x1.ff8p-15, 0x03FF),
        (-0.0, 0x8000), (.infinity, 0x7C00), (-.infinity, 0xFC00), (1.0009765625, 0x3C01),
        (1.00048828125, 0x3C00), (1.00146484375, 0x3C02), (1e10, 0x7C00),
    ] as [(Float, UInt16)])
    func floatToHalfKnownPatterns(value: Float, bits: UInt16) {
        #expect(floatToHalfBits(value) == bits, "\(value) → 0x\(String(floatToHalfBits(value), radix: 16))")
    }

    @Test func nanStaysQuietNaN() {
        #expect(floatToHalfBits(.nan) & 0x7E00 == 0x7E00)
        #expect(halfBitsToFloat(0x7E00).isNaN)
        #expect(halfBitsToFloat(0x7C01).isNaN)
        #expect(floatToHalfBits(-Float.nan) & 0x8000 == 0x8000)
        #expect(floatToBFloat16Bits(.nan) & 0x7FC0 == 0x7FC0)
        #expect(floatToBFloat16Bits(Float(bitPattern: 0x7F80_0001)) != 0x7F80, "signalling NaN must not become infinity")
    }

    @Test func everyHalfValueRoundTrips() {
        for bits in UInt16.min...UInt16.max {
            let value = halfBitsToFloat(bits)
            if value.isNaN { continue }
            #expect(floatToHalfBits(value) == bits)
        }
    }

    @Test func halfMatchesNativeFloat16OnRandomFloats() {
        var random = SeededRandom(seed: 7)
        for _ in 0..<200_000 {
            // Random bit patterns cover every exponent, including subnormal results.
            let value = Float(bitPattern: UInt32(truncatingIfNeeded: random.next()) & 0xC7FF_FFFF)
            if value.isNaN { continue }
            #expect(floatToHalfBits(value) == Float16(value).bitPattern, "\(value)")
            #expect(halfBitsToFloat(Float16(value).bitPattern) == Float(Float16(value)))
        }
    }

    @Test(arguments: [
        (Float(1.0), UInt16(0x3F80)), (Float(bitPattern: 0x3F80_8000), 0x3F80), (Float(bitPattern: 0x3F81_8000), 0x3F82),
        (Float(bitPattern: 0x3F80_8001), 0x3F81), (-0.0, 0x8000), (.infinity, 0x7F80),
        (Float.greatestFiniteMagnitude, 0x7F80), (Float(bitPattern: 0x0000_0001), 0x0000), (Float(bitPattern: 0x0001_8000), 0x0002),
    ] as [(Float, UInt16)])
    func floatToBFloat16KnownPatterns(value: Float, bits: UInt16) {
        #expect(floatToBFloat16Bits(value) == bits)
    }

    @Test func everyBFloat16ValueRoundTrips() {
        for bits in UInt16.min...UInt16.max {
            let value = bfloat16BitsToFloat(bits)
            if value.isNaN { continue }
            #expect(floatToBFloat16Bits(value) == bits)
            #expect(value.bitPattern == UInt32(bits) << 16)
        }
    }

    @Test func float8KnownValuesAndRoundTrips() {
        #expect(float8E4M3BitsToFloat(0x7E) == 448)
        #expect(float8E4M3BitsToFloat(0x7F).isNaN)
        #expect(float8E4M3BitsToFloat(0x01) == 0x1p-9)
        #expect(float8E4M3BitsToFloat(0x08) == 0x1p-6)
        #expect(float8E4M3BitsToFloat(0x38) == 1)
        #expect(float8E5M2BitsToFloat(0x3C) == 1)
        #expect(float8E5M2BitsToFloat(0x7B) == 57344)
        #expect(float8E5M2BitsToFloat(0x7C) == .infinity)
        for bits in UInt8.min...UInt8.max {
            let e4m3 = float8E4M3BitsToFloat(bits)
            if !e4m3.isNaN { #expect(floatToFloat8E4M3Bits(e4m3) == bits, "e4m3 0x\(String(bits, radix: 16))") }
            let e5m2 = float8E5M2BitsToFloat(bits)
            if !e5m2.isNaN { #expect(floatToFloat8E5M2Bits(e5m2) == bits, "e5m2 0x\(String(bits, radix: 16))") }
        }
        #expect(floatToFloat8E4M3Bits(1000).isMultiple(of: 1) && float8E4M3BitsToFloat(floatToFloat8E4M3Bits(1000)).isNaN)
        #expect(floatToFloat8E4M3Bits(1.0625) == 0x38, "halfway between 1 and 1.125 rounds to even")
    }
}
