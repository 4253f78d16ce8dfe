"""Hand-labelled line truth: the authoring source of sample.jsonl.

Each entry is a buggy (or correct) variant of a HumanEval/MBPP solution, written by hand.
Labels were set by reading the code, independently of rl.tasks.lines' rule: a line carrying
``# WRONG: <reason>`` is wrong (it must change in the smallest fix); every other annotated line
is correct. ``# WRONG(missing): <reason>`` marks the line just before missing code (the
convention of docs/annotation.md for a deleted statement). The markers are stripped from the
program text; ``build_sample.py`` turns this file into sample.jsonl.

HumanEval entries give the ``completion`` (program = prompt + completion); MBPP entries give
the whole ``code``.
"""

SAMPLES = [
    # ------------------------------------------------------------------ HumanEval
    dict(
        id="he3_renamed_ok",
        task_id="HumanEval/3",
        completion="""\
    total = 0
    for x in operations:
        total += x
        if total < 0:
            return True
    return False
""",
    ),
    dict(
        id="he3_le",
        task_id="HumanEval/3",
        completion="""\
    balance = 0

    for op in operations:
        balance += op
        if balance <= 0:  # WRONG: a balance of exactly zero is not below zero
            return True

    return False
""",
    ),
    dict(
        id="he3_dedented_check",
        task_id="HumanEval/3",
        completion="""\
    balance = 0
    for op in operations:
        balance += op
    if balance < 0:  # WRONG: checks only the final balance; must be inside the loop
        return True  # WRONG: belongs to the check that must move into the loop
    return False
""",
    ),
    dict(
        id="he4_n_minus_1",
        task_id="HumanEval/4",
        completion="""\
    mean = sum(numbers) / len(numbers)
    return sum(abs(x - mean) for x in numbers) / (len(numbers) - 1)  # WRONG: MAD divides by n, not n - 1
""",
    ),
    dict(
        id="he4_loop_ok",
        task_id="HumanEval/4",
        completion="""\
    n = len(numbers)
    mu = sum(numbers) / n
    total = 0.0
    for v in numbers:
        total += abs(v - mu)
    return total / n
""",
    ),
    dict(
        id="he4_loop_noabs",
        task_id="HumanEval/4",
        completion="""\
    n = len(numbers)
    mu = sum(numbers) / n
    total = 0.0
    for v in numbers:
        total += v - mu  # WRONG: the deviation needs abs(); signed deviations sum to zero
    return total / n
""",
    ),
    dict(
        id="he12_min",
        task_id="HumanEval/12",
        completion="""\
    if not strings:
        return None

    maxlen = min(len(x) for x in strings)  # WRONG: the longest string needs max, not min
    for s in strings:
        if len(s) == maxlen:
            return s
""",
    ),
    dict(
        id="he12_no_empty_check",
        task_id="HumanEval/12",
        completion="""\
    maxlen = max(len(x) for x in strings)  # WRONG(missing): the empty-list check (return None) is missing before this
    for s in strings:
        if len(s) == maxlen:
            return s
""",
    ),
    dict(
        id="he13_swapped",
        task_id="HumanEval/13",
        completion="""\
    while b:
        a, b = b, b % a  # WRONG: Euclid's step is a % b, not b % a
    return a
""",
    ),
    dict(
        id="he13_recursive_ok",
        task_id="HumanEval/13",
        completion="""\
    return a if b == 0 else greatest_common_divisor(b, a % b)
""",
    ),
    dict(
        id="he24_ascending",
        task_id="HumanEval/24",
        completion="""\
    for i in range(2, n):  # WRONG: ascending search finds the smallest divisor, not the largest
        if n % i == 0:
            return i
""",
    ),
    dict(
        id="he35_zero_init",
        task_id="HumanEval/35",
        completion="""\
    m = 0  # WRONG: starting from 0 gives 0 for a list of negative numbers
    for e in l:
        if e > m:
            m = e
    return m
""",
    ),
    dict(
        id="he35_lt",
        task_id="HumanEval/35",
        completion="""\
    m = l[0]
    for e in l:
        if e < m:  # WRONG: keeps the minimum instead of the maximum
            m = e
    return m
""",
    ),
    dict(
        id="he46_two_bugs",
        task_id="HumanEval/46",
        completion="""\
    results = [0, 0, 2, 0]
    if n < 4:
        return results[n]

    for _ in range(4, n):  # WRONG: stops one step early; needs n + 1
        results.append(results[-1] + results[-2] + results[-3])  # WRONG: fib4 sums four terms, results[-4] is missing
        results.pop(0)

    return results[-1]
""",
    ),
    dict(
        id="he55_base",
        task_id="HumanEval/55",
        completion="""\
    if n == 0:
        return 0
    if n == 1:
        return 0  # WRONG: fib(1) is 1
    return fib(n - 1) + fib(n - 2)
""",
    ),
    dict(
        id="he59_min",
        task_id="HumanEval/59",
        completion="""\
    def is_prime(k):
        if k < 2:
            return False
        for i in range(2, k - 1):
            if k % i == 0:
                return False
        return True
    largest = 1
    for j in range(2, n + 1):
        if n % j == 0 and is_prime(j):
            largest = min(largest, j)  # WRONG: min keeps 1; the largest factor needs max
    return largest
""",
    ),
    dict(
        id="he70_no_switch",
        task_id="HumanEval/70",
        completion="""\
    res, switch = [], True
    while lst:
        res.append(min(lst) if switch else max(lst))
        lst.remove(res[-1])  # WRONG(missing): `switch = not switch` is missing after this line
    return res
""",
    ),
    dict(
        id="he73_index",
        task_id="HumanEval/73",
        completion="""\
    ans = 0
    for i in range(len(arr) // 2):
        if arr[i] != arr[len(arr) - i]:  # WRONG: the mirror index is len(arr) - i - 1 (IndexError at i = 0)
            ans += 1
    return ans
""",
    ),
    dict(
        id="he101_space",
        task_id="HumanEval/101",
        completion="""\
    if not s:
        return []

    s_list = []

    for letter in s:
        if letter == ' ':  # WRONG: commas must be turned into spaces, not spaces
            s_list.append(' ')
        else:
            s_list.append(letter)

    s_list = "".join(s_list)
    return s_list.split()
""",
    ),
    dict(
        id="he11_xx",
        task_id="HumanEval/11",
        completion="""\
    def xor(i, j):
        if i == j:
            return '0'
        else:
            return '1'

    return ''.join(xor(x, x) for x, y in zip(a, b))  # WRONG: xors a character with itself instead of with y
""",
    ),
    dict(
        id="he26_lt1",
        task_id="HumanEval/26",
        completion="""\
    import collections
    c = collections.Counter(numbers)
    return [n for n in numbers if c[n] < 1]  # WRONG: keeps nothing; elements occurring once have c[n] == 1
""",
    ),
    dict(
        id="he52_syntax",
        task_id="HumanEval/52",
        completion="""\
    for e in l:
        if e >= t  # WRONG: missing colon, a syntax error
            return False
    return True
""",
    ),
    dict(
        id="he63_iterative_ok",
        task_id="HumanEval/63",
        completion="""\
    a, b, c = 0, 0, 1
    for _ in range(n):
        a, b, c = b, c, a + b + c
    return a
""",
    ),
    # ------------------------------------------------------------------ MBPP
    dict(
        id="mbpp57_ascending",
        task_id="Mbpp/57",
        code="""\
def find_Max_Num(arr,n) : 
    arr.sort() # WRONG: digits must be sorted in descending order for the largest number
    num = arr[0] 
    for i in range(1,n) : 
        num = num * 10 + arr[i] 
    return num 
""",
    ),
    dict(
        id="mbpp23_sum_outside",
        task_id="Mbpp/23",
        code="""\
def maximum_Sum(list1): 
    maxi = -100000
    sum = 0  # WRONG: the running sum must be reset inside the loop, once per sublist
    for x in list1: 
        for y in x: 
            sum+= y      
        maxi = max(sum,maxi)     
    return maxi 
""",
    ),
    dict(
        id="mbpp28_recursion",
        task_id="Mbpp/28",
        code="""\
def binomial_Coeff(n,k): 
    if k > n : 
       return 0
    if k==0 or k ==n : 
        return 1 
    return binomial_Coeff(n-1,k-1) + binomial_Coeff(n,k-1)  # WRONG: Pascal's rule is C(n-1,k-1) + C(n-1,k)
""",
    ),
    dict(
        id="mbpp32_sqrt_bound",
        task_id="Mbpp/32",
        code="""\
import math 
def max_Prime_Factors (n): 
    maxPrime = -1 
    while n%2 == 0: 
        maxPrime = 2
        n >>= 1    
    for i in range(3,int(math.sqrt(n)),2):  # WRONG: the bound must include sqrt(n) itself (+1)
        while n % i == 0: 
            maxPrime = i 
            n = n / i 
    if n > 2: 
        maxPrime = n  
    return int(maxPrime)
""",
    ),
    dict(
        id="mbpp12_key_max",
        task_id="Mbpp/12",
        code="""\
def sort_matrix(M):
    result = sorted(M, key=max)  # WRONG: rows are ordered by their sum, not their maximum
    return result
""",
    ),
    dict(
        id="mbpp41_odd",
        task_id="Mbpp/41",
        code="""\
def filter_evennumbers(nums):
 even_nums = list(filter(lambda x: x%2 == 1, nums))  # WRONG: keeps odd numbers; even means x % 2 == 0
 return even_nums
""",
    ),
    dict(
        id="mbpp18_count_equiv_ok",
        task_id="Mbpp/18",
        code="""\
NO_OF_CHARS = 256
def str_to_list(string): 
\ttemp = [] 
\tfor x in string: 
\t\ttemp.append(x) 
\treturn temp 
def lst_to_string(List): 
\treturn ''.join(List) 
def get_char_count_array(string): 
\tcount = [0] * NO_OF_CHARS 
\tfor i in string: 
\t\tcount[ord(i)] = 1
\treturn count 
def remove_dirty_chars(string, second_string): 
\tcount = get_char_count_array(second_string) 
\tip_ind = 0
\tres_ind = 0
\ttemp = '' 
\tstr_list = str_to_list(string) 
\twhile ip_ind != len(str_list): 
\t\ttemp = str_list[ip_ind] 
\t\tif count[ord(temp)] == 0: 
\t\t\tstr_list[res_ind] = str_list[ip_ind] 
\t\t\tres_ind += 1
\t\tip_ind+=1
\treturn lst_to_string(str_list[0:res_ind]) 
""",
    ),
]
