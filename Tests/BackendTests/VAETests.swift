import Foundation
import Testing
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld

/// The VAE decoder against diffusers' AutoencoderKL run in float64
/// (Tools/reference/make_pipeline_fixtures.py), from the diffusers folder and BFL's single file.
@Suite(.serialized) struct VAETests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/pipeline")
    static let pipeline = root.appendingPathComponent("flux-tiny")

    @Test(arguments: ["vae", "ae.safetensors"])
    func decoderMatchesDiffusers(_ source: String) throws {
        let vae = try VAEDecoder.load(path: Self.pipeline.appendingPathComponent(source).path)
        #expect(vae.config.blockOutChannels == [8, 16] && vae.config.latentChannels == 4 && vae.config.layersPerBlock == 1)
        let expected = try SafeTensorsFile(path: Self.root.appendingPathComponent("generate-dev.safetensors").path)
        let latents = try expected.tensor(named: "latents_3")
        let unscaled = vae.config.unscaled(latents)
        let graph = try vae.graph(batch: 1, height: latents.shape[2], width: latents.shape[3])
        for backend in BackendsUnderTest.all {
            let image = try backend.execute(graph, inputs: ["latents": unscaled]).outputs[0]
            let reference = try expected.tensor(named: "decoded")
            #expect(image.shape == reference.shape)
            let error = relativeError(actual: image.floats(), expected: reference.doubles())
            print("vae \(source) \(BackendsUnderTest.label(backend)) relative error \(error)")
            #expect(error <= 1e-4, "\(source) on \(BackendsUnderTest.label(backend)): \(error)")
        }
    }

    /// diffusers' tiled decoding (16-pixel tiles over a 32×48 image: 4-pixel blends, edge
    /// tiles smaller than the rest) matches `enable_tiling()`'s output.
    @Test func tiledDecodingMatchesDiffusers() throws {
        let vae = try VAEDecoder.load(path: Self.pipeline.appendingPathComponent("vae").path)
        let expected = try SafeTensorsFile(path: Self.root.appendingPathComponent("generate-dev.safetensors").path)
        let latents = try expected.tensor(named: "latents_3")
        let unscaled = vae.config.unscaled(latents)
        let reference = try expected.tensor(named: "decoded_tiled_16")
        for backend in BackendsUnderTest.all {
            let image = try vae.decode(unscaled, tileSize: 16, on: backend)
            #expect(image.shape == reference.shape)
            let error = relativeError(actual: image.floats(), expected: reference.doubles())
            #expect(error <= 1e-4, "tiled on \(BackendsUnderTest.label(backend)): \(error)")
        }
        // Larger tiles than the image decode it whole.
        let whole = try vae.decode(unscaled, tileSize: 64, on: BackendsUnderTest.all[0])
        #expect(relativeError(actual: whole.floats(), expected: try expected.tensor(named: "decoded").doubles()) <= 1e-4)
    }
}
