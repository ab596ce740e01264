// Built only where the Vulkan headers are installed; see VulkanBackendPlugin.swift.
#if canImport(CVulkan)
import CVulkan
import Foundation
import LoRAFuse

/// Compiled SPIR-V shipped with the backend (Backends/Vulkan/SPIRV/, built from Shaders/ by
/// Tools/shaders/compile-shaders.sh).
enum ShaderLibrary {
    static func spirv(_ kernel: VulkanKernel) throws -> [UInt32] {
        let name = kernel.spirvName
        guard let url = Bundle.module.url(forResource: name, withExtension: "spv", subdirectory: "SPIRV"),
              let data = try? Data(contentsOf: url), data.count % 4 == 0, !data.isEmpty else {
            throw BackendError.deviceFailure(backend: "vulkan", reason: "shader \(name).spv is missing from the resources")
        }
        return data.withUnsafeBytes { Array($0.bindMemory(to: UInt32.self)) }
    }
}

/// A compute pipeline for one `VulkanKernel` and specialization: its descriptor-set layout
/// (the kernel's storage and uniform texel buffers) and a 128-byte push-constant range (the
/// minimum every device guarantees; the generator refuses larger blocks).
final class VulkanPipeline {
    static let pushConstantSize = 128

    let kernel: VulkanKernel
    let pipeline: VkPipeline
    let layout: VkPipelineLayout
    let setLayout: VkDescriptorSetLayout
    var bindingCount: Int { kernel.bindingCount }
    var texelBindings: Set<Int> { kernel.texelBindings }
    var name: String { kernel.spirvName }
    // Handles, not the VulkanDevice: pipelines are released from the device's deinit.
    private let functions: LFVulkanFunctions
    private let vkDevice: VkDevice

    init(device: VulkanDevice, kernel: VulkanKernel, specialization: [UInt32]) throws {
        guard specialization.count == kernel.specializationCount else {
            throw BackendError.deviceFailure(backend: "vulkan", reason:
                "\(kernel): \(specialization.count) specialization constants for the shader's \(kernel.specializationCount)")
        }
        guard kernel.constants.layoutMatchesSPIRV else {
            throw BackendError.deviceFailure(backend: "vulkan", reason: "\(kernel): \(kernel.constants) is not laid out as the shader's push constants")
        }
        self.kernel = kernel
        self.functions = device.functions
        self.vkDevice = device.device
        let name = kernel.spirvName, bindings = kernel.bindingCount, texelBindings = kernel.texelBindings
        let functions = device.functions
        let code = try ShaderLibrary.spirv(kernel)
        var module: VkShaderModule?
        try code.withUnsafeBufferPointer { words in
            var info = VkShaderModuleCreateInfo()
            info.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO
            info.codeSize = words.count * 4
            info.pCode = words.baseAddress
            try check(functions.vkCreateShaderModule(device.device, &info, nil, &module), "vkCreateShaderModule(\(name))")
        }
        defer { functions.vkDestroyShaderModule(device.device, module, nil) }

        var layoutBindings = (0..<bindings).map { index -> VkDescriptorSetLayoutBinding in
            var binding = VkDescriptorSetLayoutBinding()
            binding.binding = UInt32(index)
            binding.descriptorType = texelBindings.contains(index) ? VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER : VK_DESCRIPTOR_TYPE_STORAGE_BUFFER
            binding.descriptorCount = 1
            binding.stageFlags = VkShaderStageFlags(VK_SHADER_STAGE_COMPUTE_BIT.rawValue)
            return binding
        }
        var setLayout: VkDescriptorSetLayout?
        try layoutBindings.withUnsafeMutableBufferPointer { pointer in
            var info = VkDescriptorSetLayoutCreateInfo()
            info.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO
            info.bindingCount = UInt32(bindings)
            info.pBindings = UnsafePointer(pointer.baseAddress)
            try check(functions.vkCreateDescriptorSetLayout(device.device, &info, nil, &setLayout), "vkCreateDescriptorSetLayout")
        }
        self.setLayout = setLayout!

        var range = VkPushConstantRange()
        range.stageFlags = VkShaderStageFlags(VK_SHADER_STAGE_COMPUTE_BIT.rawValue)
        range.size = UInt32(Self.pushConstantSize)
        var pipelineLayout: VkPipelineLayout?
        try withUnsafePointer(to: &range) { rangePointer in
            try withUnsafePointer(to: &setLayout) { setPointer in
                var info = VkPipelineLayoutCreateInfo()
                info.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO
                info.setLayoutCount = 1
                info.pSetLayouts = setPointer
                info.pushConstantRangeCount = 1
                info.pPushConstantRanges = rangePointer
                try check(functions.vkCreatePipelineLayout(device.device, &info, nil, &pipelineLayout), "vkCreatePipelineLayout")
            }
        }
        self.layout = pipelineLayout!

        var entries = specialization.indices.map { index -> VkSpecializationMapEntry in
            VkSpecializationMapEntry(constantID: UInt32(index), offset: UInt32(index * 4), size: 4)
        }
        var values = specialization
        var pipeline: VkPipeline?
        try entries.withUnsafeMutableBufferPointer { entryPointer in
            try values.withUnsafeMutableBytes { valuePointer in
                var specializationInfo = VkSpecializationInfo()
                specializationInfo.mapEntryCount = UInt32(specialization.count)
                specializationInfo.pMapEntries = UnsafePointer(entryPointer.baseAddress)
                specializationInfo.dataSize = specialization.count * 4
                specializationInfo.pData = UnsafeRawPointer(valuePointer.baseAddress)
                try "main".withCString { entryName in
                    try withUnsafePointer(to: &specializationInfo) { specializationPointer in
                        var stage = VkPipelineShaderStageCreateInfo()
                        stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO
                        stage.stage = VK_SHADER_STAGE_COMPUTE_BIT
                        stage.module = module
                        stage.pName = entryName
                        stage.pSpecializationInfo = specialization.isEmpty ? nil : specializationPointer
                        var info = VkComputePipelineCreateInfo()
                        info.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO
                        info.stage = stage
                        info.layout = pipelineLayout
                        try check(functions.vkCreateComputePipelines(device.device, nil, 1, &info, nil, &pipeline),
                                  "vkCreateComputePipelines(\(name))")
                    }
                }
            }
        }
        self.pipeline = pipeline!
    }

    deinit {
        functions.vkDestroyPipeline(vkDevice, pipeline, nil)
        functions.vkDestroyPipelineLayout(vkDevice, layout, nil)
        functions.vkDestroyDescriptorSetLayout(vkDevice, setLayout, nil)
    }
}

#endif
