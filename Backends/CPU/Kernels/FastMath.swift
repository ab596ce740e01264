/// Vectorised exp for activations: Cephes' range reduction (x = n·ln2 + r, |r| ≤ ln2/2)
/// and degree-6 polynomial, scaled by 2ⁿ through the exponent bits. Relative error below
/// 2e-7 over [-87, 88]; inputs outside are clamped (exp(-87) ≈ 1.6e-38 stands in for 0).
@inline(__always)
func vectorExp(_ input: SIMD8<Float>) -> SIMD8<Float> {
    // `replacing(with:where:)` compiles to vminps/vblendvps; the standard library's
    // pointwiseMin/Max are not inlined and cost a call (with spills) per vector.
    let high = SIMD8<Float>(repeating: 88.3), low = SIMD8<Float>(repeating: -87.3)
    let x = input.replacing(with: high, where: input .> high).replacing(with: low, where: input .< low)
    // Round x·log2(e) to an integer with the 1.5·2²³ trick: the sum's low mantissa bits
    // hold n, so no float↔int conversion (which the standard library does lane by lane).
    let magic = SIMD8<Float>(repeating: 12_582_912)
    let shifted = x * 1.44269504088896341 + magic
    let n = shifted - magic
    let r = x - n * 0.693359375 + n * 2.12194440e-4
    var p = SIMD8<Float>(repeating: 1.9875691500e-4)
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    let polynomial = p * r * r + r + 1
    // 2ⁿ: n + 127 in the exponent field (n ∈ [-126, 127] after the clamp).
    let integer = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- unsafeBitCast(magic, to: SIMD8<Int32>.self)
    let scale = unsafeBitCast((integer &+ 127) &<< 23, to: SIMD8<Float>.self)
    return polynomial * scale
}

/// Applies `body` to `count` floats eight at a time (the tail through a padded vector).
@inline(__always)
func forEachVector(_ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, _ range: Range<Int>,
                   _ body: (SIMD8<Float>) -> SIMD8<Float>) {
    var index = range.lowerBound
    while index + 8 <= range.upperBound {
        let value = UnsafeRawPointer(input + index).loadUnaligned(as: SIMD8<Float>.self)
        UnsafeMutableRawPointer(output + index).storeBytes(of: body(value), as: SIMD8<Float>.self)
        index += 8
    }
    if index < range.upperBound {
        var padded = SIMD8<Float>(repeating: 0)
        for lane in 0..<(range.upperBound - index) { padded[lane] = input[index + lane] }
        let result = body(padded)
        for lane in 0..<(range.upperBound - index) { output[index + lane] = result[lane] }
    }
}
