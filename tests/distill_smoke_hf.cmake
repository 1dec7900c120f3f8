# SPDX-License-Identifier: Apache-2.0
# tests/distill_smoke_hf.cmake: `grpo distill` from a Hugging Face checkpoint through one policy (native or torch):
# on-policy distillation of a student that starts as its teacher (the same tiny Qwen2 directory). The first step's
# reverse KL between two identical models is 0 up to rounding, the run finishes, and the student is saved.
#   cmake -DGRPO=path/to/grpo -DWORK_DIR=dir -DMODEL=dir -DPOLICY=native|torch -P tests/distill_smoke_hf.cmake
if(NOT GRPO OR NOT WORK_DIR OR NOT MODEL OR NOT POLICY)
  message(FATAL_ERROR "distill_smoke_hf: pass -DGRPO, -DWORK_DIR, -DMODEL and -DPOLICY")
endif()
file(REMOVE_RECURSE "${WORK_DIR}")
execute_process(
  COMMAND "${GRPO}" distill --output-dir "${WORK_DIR}" --model "${MODEL}" --teacher "${MODEL}" --policy "${POLICY}"
    --seed 7 --set distill.teacher_policy=${POLICY} --set distill.mode=on_policy --set distill.beta=1
    --set distill.steps=2 --set distill.batch_size=4 --set distill.num_samples=2 --set chat.template=plain
    --set task.operations=+ --set task.max_digits=1 --set task.heldout_size=4 --set eval.size=4
    --set eval.num_samples=0 --set max_completion_length=16 --set per_device_train_batch_size=8 --set threads=1
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "distill_smoke_hf (${POLICY}): grpo distill exited with ${rc}\n${out}\n${err}")
endif()
foreach(file model/model.safetensors model/config.json checkpoint/trainer_state.json metrics.jsonl)
  if(NOT EXISTS "${WORK_DIR}/${file}")
    message(FATAL_ERROR "distill_smoke_hf (${POLICY}): ${WORK_DIR}/${file} was not written")
  endif()
endforeach()
file(STRINGS "${WORK_DIR}/metrics.jsonl" records)
list(GET records 0 first)
string(JSON loss GET "${first}" "distill/loss")
# |loss| < 1e-4, compared as text: CMake has no floating-point comparison.
if(NOT loss MATCHES "^-?0(\\.0000[0-9]*)?([eE]-?[0-9]+)?$" AND NOT loss MATCHES "^-?[0-9.]+[eE]-(0?[5-9]|[1-9][0-9])$")
  message(FATAL_ERROR "distill_smoke_hf (${POLICY}): a student equal to its teacher has distill/loss ${loss} at step 1")
endif()
message(STATUS "distill_smoke_hf (${POLICY}): ok, step 1 loss ${loss}")
