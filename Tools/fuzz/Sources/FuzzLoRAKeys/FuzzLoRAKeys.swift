@testable import LoRAFuseFusion

/// The LoRA key mapper: every line of the input as a module name, in each naming convention.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzLoRAKeys(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    for line in text.split(separator: "\n", omittingEmptySubsequences: false).prefix(64) {
        let module = LoRAFileReader.split(String(line))?.module ?? String(line)
        if let target = LoRANaming.target(of: module) {
            for part in target.parts { _ = part.slot.rows(total: 3 * 64, inFeatures: 64) }
        }
    }
    return 0
}
