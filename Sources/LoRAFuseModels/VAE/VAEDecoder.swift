import Foundation
import LoRAFuse

/// diffusers' `AutoencoderKL` config fields the decoder uses (FLUX's: 16 latent channels,
/// blocks 128/256/512/512, 2 layers per block, GroupNorm(32), scale 0.3611, shift 0.1159).
public struct VAEConfig: Sendable, Equatable {
    public var latentChannels = 16
    public var outChannels = 3
    public var blockOutChannels = [128, 256, 512, 512]
    public var layersPerBlock = 2
    public var groups = 32
    public var scalingFactor: Float = 0.3611
    public var shiftFactor: Float = 0.1159
    public var midBlockAttention = true
    public var postQuantConv = false

    public init() {}

    /// Sampler latents in the decoder's units: z / scaling_factor + shift_factor.
    public func unscaled(_ latents: HostTensor) -> HostTensor {
        HostTensor(shape: latents.shape, floats: latents.floats().map { $0 / scalingFactor + shiftFactor })
    }

    /// Pixels per latent pixel (each up block but the last doubles the size).
    public var upscale: Int { 1 << (blockOutChannels.count - 1) }

    init(json object: [String: Any], path: String) throws {
        latentChannels = try configValue(object, "latent_channels", 4, path: path)
        outChannels = try configValue(object, "out_channels", 3, path: path)
        blockOutChannels = try configValue(object, "block_out_channels", [64], path: path)
        layersPerBlock = try configValue(object, "layers_per_block", 1, path: path)
        groups = try configValue(object, "norm_num_groups", 32, path: path)
        scalingFactor = Float(try configValue(object, "scaling_factor", 0.18215 as Double, path: path))
        shiftFactor = Float(object["shift_factor"] as? Double ?? 0)
        midBlockAttention = object["mid_block_add_attention"] as? Bool ?? true
        postQuantConv = object["use_post_quant_conv"] as? Bool ?? true
        if let types = object["up_block_types"] as? [String], let other = types.first(where: { $0 != "UpDecoderBlock2D" }) {
            throw ModelError.notAModel(path: path, reason: "up block type \(other) is not supported (only UpDecoderBlock2D)")
        }
        try validate(path: path)
    }

    func validate(path: String) throws {
        guard latentChannels > 0, outChannels > 0, !blockOutChannels.isEmpty, layersPerBlock > 0, groups > 0,
              blockOutChannels.allSatisfy({ $0 > 0 && $0 % groups == 0 }) else {
            throw ModelError.notAModel(path: path, reason: "VAE config: every block width must be a positive multiple of \(groups) groups")
        }
    }
}

/// The FLUX VAE's decoder (diffusers `AutoencoderKL.decode`, NCHW) as a graph: optional
/// post-quant 1×1 conv, `conv_in`, a mid block (ResNet, single-head self-attention,
/// ResNet), up blocks of ResNets with nearest ×2 upsampling and a 3×3 conv, GroupNorm,
/// SiLU, `conv_out`. Input `latents` [B, C, h, w] already unscaled (`z / scaling + shift`);
/// output `image` [B, 3, h·s, w·s] in about [−1, 1].
public struct VAEDecoder: Sendable {
    public let config: VAEConfig
    let weights: VAEWeights
    /// Its weights as graphs bind them, one unit a backend makes resident.
    public let weightSet = WeightSet(name: "VAE decoder")
    public var description: String { weights.source.description }

    /// A diffusers `vae/` folder (or a pipeline folder holding one), or a single file with
    /// Black Forest Labs' names (ComfyUI's `ae.safetensors`; config from shapes, FLUX's
    /// scale/shift, 32 groups unless the file's `norm_num_groups` metadata says otherwise).
    public static func load(path: String) throws -> VAEDecoder {
        let checkpoint = try ComponentCheckpoint.open(path, subfolder: "vae", stem: "diffusion_pytorch_model",
                                                      probe: "decoder.conv_in.weight", prefixes: ["", "vae.", "first_stage_model."],
                                                      classNames: ["AutoencoderKL"], kind: "VAE")
        switch checkpoint {
        case let .file(source, prefix, metadata):
            let bfl = source.contains(prefix + "decoder.mid.block_1.conv1.weight")
            var weights = VAEWeights(source: source, prefix: prefix, blackForestLabs: bfl, upBlocks: 0)
            var config = VAEConfig()
            config.latentChannels = try weights.shape("decoder.conv_in.weight")[1]
            let head = bfl ? "decoder.up" : "decoder.up_blocks"
            let blocks = weights.count(head)
            guard blocks > 0 else { throw ModelError.notAModel(path: path, reason: "no \(head).N blocks") }
            weights.upBlocks = blocks
            // Block widths from the first ResNet of each up block, shallowest first.
            config.blockOutChannels = try (0..<blocks).reversed().map { try weights.shape("decoder.up_blocks.\($0).resnets.0.conv2.weight")[0] }
            config.layersPerBlock = weights.count(bfl ? "decoder.up.0.block" : "decoder.up_blocks.0.resnets") - 1
            config.outChannels = try weights.shape("decoder.conv_out.weight")[0]
            config.postQuantConv = !bfl && weights.contains("post_quant_conv.weight")
            // GroupNorm's group count is not visible in shapes: FLUX's 32 unless the file says.
            if let groups = metadata["norm_num_groups"] {
                guard let value = Int(groups) else {
                    throw ModelError.notAModel(path: path, reason: "metadata norm_num_groups '\(groups)' is not a number")
                }
                config.groups = value
            }
            try config.validate(path: path)
            return VAEDecoder(config: config, weights: weights)
        case let .folder(source, object, configPath, prefix):
            let config = try VAEConfig(json: object, path: configPath)
            return VAEDecoder(config: config, weights: VAEWeights(source: source, prefix: prefix, blackForestLabs: false,
                                                                  upBlocks: config.blockOutChannels.count))
        }
    }

    init(config: VAEConfig, weights: VAEWeights) {
        self.config = config
        self.weights = weights
    }

    /// The decoder for `batch` latents of `height` × `width`: input `latents`, output `image`.
    public func graph(batch: Int, height: Int, width: Int) throws -> Graph {
        var builder = Builder(config: config, weights: weights, weightSet: weightSet, graph: Graph())
        let latents = builder.graph.input("latents", [batch, config.latentChannels, height, width])
        let image = try builder.decode(latents)
        builder.graph.label(image, "image")
        builder.graph.markOutput(image)
        return builder.graph
    }

    /// Decodes `latents` [B, C, h, w] (already unscaled), whole or — when `tileSize` (pixels)
    /// is given and the latents are larger than a tile — as diffusers' `tiled_decode` does:
    /// tiles of tileSize/s latents every 3/4 tile, each decoded alone, each blended linearly
    /// into the tile above and the one to its left over a quarter tile, then cropped and
    /// joined. Memory then follows the tile, not the image.
    public func decode(_ latents: HostTensor, tileSize: Int? = nil, on backend: any Backend) throws -> HostTensor {
        let (batch, channels, height, width) = (latents.shape[0], latents.shape[1], latents.shape[2], latents.shape[3])
        // Tiles of a few shapes, each shape's graph built once; the weights stay resident on
        // the backend until the image is decoded.
        var graphs: [String: Graph] = [:]
        var resident: [ResidentWeights] = []
        defer { resident.forEach { $0.release() } }
        func run(_ input: HostTensor) throws -> HostTensor {
            let key = "\(input.shape)"
            if graphs[key] == nil {
                let built = try graph(batch: batch, height: input.shape[2], width: input.shape[3])
                graphs[key] = built
                resident.append(try backend.makeResident(weightsOf: built))
            }
            return try backend.execute(graphs[key]!, inputs: ["latents": input]).outputs[0]
        }
        guard let tileSize, tileSize > 0 else { return try run(latents) }
        let tileLatent = tileSize / config.upscale
        guard tileLatent >= 1 else { throw ModelError.invalidInputs("VAE tile size \(tileSize) is smaller than the VAE's \(config.upscale)× upscale") }
        guard height > tileLatent || width > tileLatent else { return try run(latents) }
        let overlap = max(1, Int(Double(tileLatent) * 0.75)), blend = Int(Double(tileSize) * 0.25), limit = tileSize - blend
        let values = latents.floats()
        struct Tile { var values: [Float]; var height: Int; var width: Int }
        let outChannels = config.outChannels, planes = batch * outChannels
        var rows: [[Tile]] = []
        for top in stride(from: 0, to: height, by: overlap) {
            var row: [Tile] = []
            for left in stride(from: 0, to: width, by: overlap) {
                let (tileHeight, tileWidth) = (min(tileLatent, height - top), min(tileLatent, width - left))
                var part = [Float](repeating: 0, count: batch * channels * tileHeight * tileWidth)
                for plane in 0..<(batch * channels) { for y in 0..<tileHeight { for x in 0..<tileWidth {
                    part[(plane * tileHeight + y) * tileWidth + x] = values[(plane * height + top + y) * width + left + x]
                } } }
                let decoded = try run(HostTensor(shape: [batch, channels, tileHeight, tileWidth], floats: part))
                row.append(Tile(values: decoded.floats(), height: decoded.shape[2], width: decoded.shape[3]))
            }
            rows.append(row)
        }
        // Blend in diffusers' order (each tile with its already-blended upper and left neighbours).
        for i in rows.indices { for j in rows[i].indices {
            if i > 0 {
                let above = rows[i - 1][j]
                var tile = rows[i][j]
                let extent = min(above.height, tile.height, blend)
                for plane in 0..<planes { for y in 0..<extent { for x in 0..<tile.width {
                    let t = Float(y) / Float(extent)
                    let index = (plane * tile.height + y) * tile.width + x
                    tile.values[index] = above.values[(plane * above.height + above.height - extent + y) * above.width + x] * (1 - t) + tile.values[index] * t
                } } }
                rows[i][j] = tile
            }
            if j > 0 {
                let left = rows[i][j - 1]
                var tile = rows[i][j]
                let extent = min(left.width, tile.width, blend)
                for plane in 0..<planes { for y in 0..<tile.height { for x in 0..<extent {
                    let t = Float(x) / Float(extent)
                    let index = (plane * tile.height + y) * tile.width + x
                    tile.values[index] = left.values[(plane * left.height + y) * left.width + left.width - extent + x] * (1 - t) + tile.values[index] * t
                } } }
                rows[i][j] = tile
            }
        } }
        // Crop each tile to limit × limit and join.
        let rowHeights = rows.map { min($0[0].height, limit) }, columnWidths = rows[0].map { min($0.width, limit) }
        let (outHeight, outWidth) = (rowHeights.reduce(0, +), columnWidths.reduce(0, +))
        var image = [Float](repeating: 0, count: planes * outHeight * outWidth)
        var top = 0
        for (i, row) in rows.enumerated() {
            var left = 0
            for (j, tile) in row.enumerated() {
                for plane in 0..<planes { for y in 0..<rowHeights[i] { for x in 0..<columnWidths[j] {
                    image[(plane * outHeight + top + y) * outWidth + left + x] = tile.values[(plane * tile.height + y) * tile.width + x]
                } } }
                left += columnWidths[j]
            }
            top += rowHeights[i]
        }
        return HostTensor(shape: [batch, outChannels, outHeight, outWidth], floats: image)
    }

    /// Queries per attention block when the head is too wide for the fused attention kernel
    /// (FLUX's 512): scores are formed for this many queries at a time.
    static let attentionChunk = 1024

    struct Builder {
        let config: VAEConfig
        let weights: VAEWeights
        let weightSet: WeightSet
        var graph: Graph

        mutating func parameter(_ name: String, _ shape: Shape) throws -> Tensor {
            let value = try weights.tensor(name, shape: shape)
            // Matrices are views of the checkpoint (the model's weight set); vectors are
            // widened copies, constants of this graph.
            return shape.rank == 1 ? graph.parameter(name, value.converted(to: .float32)) : graph.parameter(name, value, in: weightSet)
        }

        mutating func conv(_ x: Tensor, _ name: String, _ outputs: Int, kernel: Int) throws -> Tensor {
            let weight = try parameter("\(name).weight", [outputs, x.shape[1], kernel, kernel])
            return try graph.conv2d(x, weight: weight, bias: parameter("\(name).bias", [outputs]), padding: kernel / 2)
        }

        /// GroupNorm as a LayerNorm over each group's elements, then the per-channel affine.
        mutating func groupNorm(_ x: Tensor, _ name: String) throws -> Tensor {
            let (b, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
            let grouped = try graph.reshape(x, [b, config.groups, c / config.groups * h * w])
            let normalized = try graph.reshape(graph.layerNorm(grouped, epsilon: 1e-6), x.shape)
            let scale = try graph.reshape(parameter("\(name).weight", [c]), [c, 1, 1])
            let shift = try graph.reshape(parameter("\(name).bias", [c]), [c, 1, 1])
            return try graph.add(graph.mul(normalized, scale), shift)
        }

        mutating func resnet(_ x: Tensor, _ name: String, _ outputs: Int) throws -> Tensor {
            var h = try conv(graph.silu(groupNorm(x, "\(name).norm1")), "\(name).conv1", outputs, kernel: 3)
            h = try conv(graph.silu(groupNorm(h, "\(name).norm2")), "\(name).conv2", outputs, kernel: 3)
            let shortcut = x.shape[1] == outputs ? x : try conv(x, "\(name).conv_shortcut", outputs, kernel: 1)
            return try graph.add(shortcut, h)
        }

        /// Single-head self-attention over the pixels, with a residual connection.
        mutating func attention(_ x: Tensor, _ name: String) throws -> Tensor {
            let (b, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
            let tokens = try graph.permute(graph.reshape(groupNorm(x, "\(name).group_norm"), [b, c, h * w]), [0, 2, 1])
            func project(_ part: String) throws -> Tensor {
                try graph.linear(tokens, weight: parameter("\(name).\(part).weight", [c, c]), bias: parameter("\(name).\(part).bias", [c]))
            }
            let (q, k, v) = (try project("to_q"), try project("to_k"), try project("to_v"))
            let attended: Tensor
            if c <= 256 {
                let heads: Shape = [b, h * w, 1, c]
                attended = try graph.reshape(graph.attention(query: graph.reshape(q, heads), key: graph.reshape(k, heads),
                                                             value: graph.reshape(v, heads)), [b, h * w, c])
            } else {
                // Too wide a head for the fused kernel: softmax(q·kᵀ/√c)·v, queries in chunks.
                var parts: [Tensor] = []
                for start in stride(from: 0, to: h * w, by: VAEDecoder.attentionChunk) {
                    let queries = try graph.slice(q, axis: 1, start: start, end: min(h * w, start + VAEDecoder.attentionChunk))
                    let scores = try graph.scale(graph.matmul(queries, k, transposeB: true), 1 / Float(c).squareRoot())
                    parts.append(try graph.matmul(graph.softmax(scores), v))
                }
                attended = parts.count == 1 ? parts[0] : try graph.concat(parts, axis: 1)
            }
            let projected = try graph.linear(attended, weight: parameter("\(name).to_out.0.weight", [c, c]),
                                             bias: parameter("\(name).to_out.0.bias", [c]))
            return try graph.add(x, graph.reshape(graph.permute(projected, [0, 2, 1]), x.shape))
        }

        /// Nearest-neighbour ×2: each pixel broadcast over a 2×2 block (a multiply by ones).
        mutating func upsample(_ x: Tensor) throws -> Tensor {
            let (b, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
            let ones = graph.parameter("ones_2x2", HostTensor(shape: [2, 1, 2], floats: [1, 1, 1, 1]))
            return try graph.reshape(graph.mul(graph.reshape(x, [b, c, h, 1, w, 1]), ones), [b, c, 2 * h, 2 * w])
        }

        mutating func decode(_ latents: Tensor) throws -> Tensor {
            var x = latents
            if config.postQuantConv { x = try conv(x, "post_quant_conv", config.latentChannels, kernel: 1) }
            let widths = Array(config.blockOutChannels.reversed())
            x = try conv(x, "decoder.conv_in", widths[0], kernel: 3)
            x = try resnet(x, "decoder.mid_block.resnets.0", widths[0])
            if config.midBlockAttention { x = try attention(x, "decoder.mid_block.attentions.0") }
            x = try resnet(x, "decoder.mid_block.resnets.1", widths[0])
            graph.label(x, "decoder.mid_block")
            for (index, width) in widths.enumerated() {
                for layer in 0...config.layersPerBlock { x = try resnet(x, "decoder.up_blocks.\(index).resnets.\(layer)", width) }
                if index < widths.count - 1 {
                    x = try conv(upsample(x), "decoder.up_blocks.\(index).upsamplers.0.conv", width, kernel: 3)
                }
                graph.label(x, "decoder.up_blocks.\(index)")
            }
            x = try graph.silu(groupNorm(x, "decoder.conv_norm_out"))
            return try conv(x, "decoder.conv_out", config.outChannels, kernel: 3)
        }
    }
}

/// VAE weights under diffusers' names, from a diffusers file or one with Black Forest Labs'
/// names (`decoder.up.N` counts from the deepest block; attention projections are 1×1 convs).
struct VAEWeights: Sendable {
    let source: TensorSource
    let prefix: String
    let blackForestLabs: Bool
    var upBlocks: Int

    func name(_ diffusers: String) -> String {
        guard blackForestLabs else { return prefix + diffusers }
        var parts = diffusers.split(separator: ".").map(String.init)
        var mapped: [String] = []
        var index = 0
        while index < parts.count {
            let part = parts[index]
            switch part {
            case "mid_block":
                let kind = parts[index + 1], number = Int(parts[index + 2]) ?? 0
                mapped += ["mid", kind == "resnets" ? "block_\(number + 1)" : "attn_1"]
                index += 3
                continue
            case "up_blocks":
                mapped += ["up", String(upBlocks - 1 - (Int(parts[index + 1]) ?? 0))]
                index += 2
                continue
            case "resnets": mapped.append("block")
            case "upsamplers":
                mapped.append("upsample")
                index += 2
                continue
            case "conv_shortcut": mapped.append("nin_shortcut")
            case "group_norm": mapped.append("norm")
            case "to_q": mapped.append("q")
            case "to_k": mapped.append("k")
            case "to_v": mapped.append("v")
            case "to_out":
                mapped.append("proj_out")
                index += 2
                continue
            case "conv_norm_out": mapped.append("norm_out")
            default: mapped.append(part)
            }
            index += 1
        }
        parts = mapped
        return prefix + parts.joined(separator: ".")
    }

    func tensor(_ diffusersName: String, shape: Shape) throws -> HostTensor {
        let stored = name(diffusersName)
        var value = try source.tensor(stored)
        // BFL's attention projections are 1×1 convolutions: [C, C, 1, 1] for diffusers' [C, C].
        if value.shape.rank == 4, shape.rank == 2, value.shape.dimensions == shape.dimensions + [1, 1] { value = value.reshaped(shape) }
        guard value.shape == shape else {
            throw ModelError.shapeMismatch(name: stored, expected: shape, actual: value.shape, source: source.description)
        }
        guard DType.matrixTypes.contains(value.dtype) || (shape.rank == 1 && value.dtype.isFloatingPoint) else {
            throw ModelError.unsupportedDType(name: stored, dtype: value.dtype, source: source.description)
        }
        return value
    }

    func contains(_ diffusersName: String) -> Bool { source.contains(name(diffusersName)) }
    func shape(_ diffusersName: String) throws -> Shape { try source.tensor(name(diffusersName)).shape }

    /// How many numbered children `<head>.N.` there are (`head` in the file's own names).
    func count(_ head: String) -> Int { source.childCount(prefix + head) }
}
