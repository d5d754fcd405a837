# CUDA backend: kernels for sm_80 and sm_90 built with nvcc, linked with cudart (shared); cuBLAS is
# loaded at run time with dlopen (linking it costs every process ~200 MB RSS), so only its headers are
# needed here. Or the stub that keeps the library linkable without CUDA (BNB4_CUDA=OFF, or no nvcc).
#
# No -use_fast_math / -ftz: the kernels write the fast-math instructions bitsandbytes' bytes depend on
# (rcp.approx.ftz, mul.ftz) as inline PTX, and everything else stays IEEE.
if(BNB4_CUDA)
  # sm_90a: the wgmma kernels (Hopper only; an sm_90a binary runs on compute capability 9.0 alone);
  # compute_90 PTX for later GPUs, which take the kernels that need no sm_90a instruction.
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 80-real 90a-real 90-virtual)
  endif()
  if("${CMAKE_CUDA_ARCHITECTURES}" MATCHES "90a")
    list(APPEND BNB4_CUDA_DEFINES BNB4_CUDA_SM90A=1)
  endif()
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  if(NOT DEFINED CMAKE_CUDA_RUNTIME_LIBRARY)
    set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  list(APPEND BNB4_CUDA_SOURCES
       ${CMAKE_CURRENT_LIST_DIR}/cuda_backend.cu
       ${CMAKE_CURRENT_LIST_DIR}/cuda_quantize.cu
       ${CMAKE_CURRENT_LIST_DIR}/cuda_dequantize.cu
       ${CMAKE_CURRENT_LIST_DIR}/cuda_gemm.cu
       ${CMAKE_CURRENT_LIST_DIR}/cuda_gemm_f32_tile.cu
       ${CMAKE_CURRENT_LIST_DIR}/cuda_gemm_pipe.cu
       ${CMAKE_CURRENT_LIST_DIR}/cuda_gemm_pipe_bf16.cu
       ${CMAKE_CURRENT_LIST_DIR}/cuda_gemm_tile.cu
       ${CMAKE_CURRENT_LIST_DIR}/cuda_gemv.cu)
  # nvcc's host stubs use C++ runtime helpers (static-init guards): C programs linking libbnb4.a need it
  list(APPEND BNB4_PRIVATE_LIBS CUDA::cudart ${CMAKE_DL_LIBS} stdc++)
  set(BNB4_PC_EXTRA_LIBS "-L${CUDAToolkit_LIBRARY_DIR} -lcudart -ldl -lstdc++")
  set(CMAKE_CUDA_FLAGS "${CMAKE_CUDA_FLAGS} -Xptxas=-warn-spills --expt-relaxed-constexpr")
  message(STATUS "bnb4: CUDA backend for architectures ${CMAKE_CUDA_ARCHITECTURES} (nvcc ${CMAKE_CUDA_COMPILER_VERSION})")
else()
  list(APPEND BNB4_CUDA_SOURCES ${CMAKE_CURRENT_LIST_DIR}/cuda_stub.c)
endif()
