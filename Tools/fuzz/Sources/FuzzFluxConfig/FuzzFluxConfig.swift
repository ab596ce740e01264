import FuzzSupport
import LoRAFuse
import LoRAFuseModels

/// A diffusers transformer config.json: the strict JSON parser, the typed reading and the
/// bounds check; a config that passes must give sizes that compute without overflow.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFluxConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let json = try? StrictJSONParser.parse(bytes), let config = try? FluxConfig(json: json, source: "fuzz") else { return 0 }
    guard (try? config.validate(source: "fuzz")) != nil else { return 0 }
    _ = config.linearLayers.count
    _ = config.mlpHiddenDim
    return 0
}
